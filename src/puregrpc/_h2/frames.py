"""HTTP/2 framing (RFC 9113 sections 4 and 6): constants, the frame header layout, and
writers that append whole frames to an output buffer.

Parsing stays in the connection's input loop, which unpacks the 9-byte header with
``unpack_header`` and dispatches on the type: one call per frame, no frame objects.
The writers are plain functions over a ``bytearray`` so the coordinator calls them
without a method lookup.
"""

from __future__ import annotations

import struct
from typing import List, Tuple, Union

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

MIN_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = (1 << 24) - 1

# Frame header: length (24 bits) and type packed in one u32, flags, stream id.
FRAME_HEADER = struct.Struct(">IBI")
pack_header = FRAME_HEADER.pack
unpack_header = FRAME_HEADER.unpack_from
U32 = struct.Struct(">I")
U32X2 = struct.Struct(">II")


# A DATA payload of at least this many bytes that arrived as a run of frames is reported
# as views of the bytes read (``DataReceived.pieces``), not joined into new bytes: a
# large message is then copied once in Python, when its consumer joins it.
VIEW_RUN = 32 * 1024

Payload = Union[bytes, List[memoryview]]


def data_run(buf: bytes, start: int, pos: int, end: int, sid: int, max_frame: int) -> Tuple[int, int, Payload]:
    """The DATA frames of stream ``sid`` that follow, whole, one unpadded non-empty DATA
    frame of it (payload ``buf[start:pos]``) in ``buf``, taken as one: returns where the
    last one taken ends, its flags and the payloads: joined (one copy), or as views of
    ``buf`` when they add up to VIEW_RUN bytes or more (no copy).

    A frame is taken while it is DATA on the same stream, not padded, not empty, within
    ``max_frame``, whole in ``buf[:end]``, and the frame before it did not end the stream;
    the first frame that is not is left to the input loop. A large message arrives in
    many 16 KiB frames, and handling each one alone cost more than its bytes.
    """
    ranges: List[Tuple[int, int]] = [(start, pos)]
    flags = 0
    total = pos - start
    while end - pos >= 9:
        head, next_flags, next_sid = unpack_header(buf, pos)
        length = head >> 8
        fend = pos + 9 + length
        if (
            head & 0xFF != DATA
            or next_sid & 0x7FFFFFFF != sid
            or next_flags & FLAG_PADDED
            or not length
            or length > max_frame
            or fend > end
        ):
            break
        ranges.append((pos + 9, fend))
        total += length
        flags = next_flags
        pos = fend
        if flags & FLAG_END_STREAM:
            break
    if total >= VIEW_RUN:
        view = memoryview(buf)
        return pos, flags, [view[a:b] for a, b in ranges]
    if len(ranges) == 1:
        return pos, flags, buf[start:pos]
    with memoryview(buf) as view:
        return pos, flags, b"".join([view[a:b] for a, b in ranges])


def write_window_update(out: bytearray, sid: int, increment: int) -> None:
    out += pack_header(4 << 8 | WINDOW_UPDATE, 0, sid)
    out += U32.pack(increment)


def write_rst(out: bytearray, sid: int, code: int) -> None:
    out += pack_header(4 << 8 | RST_STREAM, 0, sid)
    out += U32.pack(code)


def write_goaway(out: bytearray, last: int, code: int, debug: bytes) -> None:
    out += pack_header((8 + len(debug)) << 8 | GOAWAY, 0, 0)
    out += U32X2.pack(last, code)
    out += debug


def write_ping(out: bytearray, opaque: bytes, ack: bool) -> None:
    out += pack_header(8 << 8 | PING, FLAG_ACK if ack else 0, 0)
    out += opaque


def write_headers(out: bytearray, sid: int, block: bytes, end_stream: bool, max_frame: int) -> None:
    """A header block in one HEADERS frame, or continued in CONTINUATION frames
    when it is larger than the peer's frame size (RFC 9113 4.3)."""
    flags = FLAG_END_STREAM if end_stream else 0
    n = len(block)
    if n <= max_frame:
        out += pack_header(n << 8 | HEADERS, flags | FLAG_END_HEADERS, sid)
        out += block
        return
    out += pack_header(max_frame << 8 | HEADERS, flags, sid)
    out += block[:max_frame]
    pos = max_frame
    while pos < n:
        chunk = block[pos : pos + max_frame]
        pos += len(chunk)
        last = FLAG_END_HEADERS if pos >= n else 0
        out += pack_header(len(chunk) << 8 | CONTINUATION, last, sid)
        out += chunk
