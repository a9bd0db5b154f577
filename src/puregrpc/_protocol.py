"""gRPC over HTTP/2, server side, sans-I/O (grpc/grpc doc/PROTOCOL-HTTP2.md).

Pure functions and one small decoder: request-header validation, ``grpc-timeout``,
metadata conversion, message framing, and the response header blocks. Nothing
here touches sockets, threads or the clock.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import struct
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union
from urllib.parse import quote, unquote

from ._compression import ACCEPT_ENCODING, SUPPORTED
from ._h2.hpack_encoder import encode_headers
from ._status import StatusCode


class Metadatum(NamedTuple):
    """One metadata item, as grpcio hands them to user code: a ``(key, value)`` pair
    that also has ``.key`` and ``.value`` (OpenTelemetry's interceptor reads those)."""

    key: str
    value: Union[str, bytes]


Metadata = Tuple[Metadatum, ...]
# Metadatum((key, value)) without the Python-level __new__ a NamedTuple call runs: one
# is made per metadata item of every request.
_metadatum: Callable[[Tuple[str, Union[str, bytes]]], Metadatum] = functools.partial(tuple.__new__, Metadatum)

DEFAULT_MAX_RECEIVE = 4 * 1024 * 1024

# Headers that carry the protocol itself; never shown to handlers as metadata.
_RESERVED = frozenset(
    (
        "te",
        "content-type",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-message-type",
        "grpc-status",
        "grpc-message",
        "grpc-status-details-bin",
        "connection",
        "host",
        "content-length",
        "accept-encoding",
    )
)
# A custom metadata key (PROTOCOL-HTTP2.md "Custom-Metadata"); checked with fullmatch,
# so a trailing newline is not let through as ``$`` would.
_LEGAL_KEY = re.compile(r"[0-9a-z_.\-]+")

# Response fields a handler's metadata may not set: the ones the gRPC layer writes itself
# and HTTP/2's connection-specific fields (RFC 9113 8.2.2), which make a response
# malformed. Dropped silently, as grpcio drops its own. Other "grpc-" keys pass, as in
# grpcio (e.g. grpc-retry-pushback-ms in trailers).
_NOT_USER_METADATA = frozenset(
    (
        "te",
        "content-type",
        "content-length",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "grpc-status",
        "grpc-message",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-timeout",
        "grpc-message-type",
        "grpc-internal-encoding-request",
    )
)

_TIMEOUT_UNITS = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}


class RequestRejected(Exception):
    """A request the server answers without running a handler."""

    def __init__(self, http_status: int, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message


class ProtocolViolation(Exception):
    """A gRPC framing error inside a stream; the RPC ends with ``code``."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_timeout(value: str) -> float:
    """``grpc-timeout`` -> seconds. At most 8 digits and one unit letter."""
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8 and digits.isdigit() and digits.isascii()) or unit not in _TIMEOUT_UNITS:
        raise ValueError(f"malformed grpc-timeout {value!r}")
    return int(digits) * _TIMEOUT_UNITS[unit]


def decode_bin_value(value: str) -> bytes:
    """Base64 of a ``-bin`` header, padded or not (the spec allows both)."""
    value = value.strip()
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"invalid base64 in binary header value {value!r}") from None


class RequestHead:
    """What the server needs from a validated request header list."""

    __slots__ = ("accept_encoding", "content_type", "encoding", "metadata", "method", "timeout")

    def __init__(
        self,
        method: str,
        content_type: str,
        timeout: Optional[float],
        encoding: Optional[str],
        accept_encoding: Tuple[str, ...],
        metadata: Metadata,
    ) -> None:
        self.method = method
        self.content_type = content_type
        self.timeout = timeout
        self.encoding = encoding
        self.accept_encoding = accept_encoding
        self.metadata = metadata


@functools.lru_cache(maxsize=64)
def _accept_list(value: str) -> Tuple[str, ...]:
    # A client sends the same grpc-accept-encoding on every call: split it once.
    return tuple([item.strip() for item in value.split(",")])


class RequestScan:
    """What a run of request headers says, before the request is judged whole.
    ``scan_request(rest, scan_request(first))`` equals ``scan_request(first + rest)``,
    so the scan of the headers many requests start with can be kept and shared (it
    is not changed once made, but for ``head``, set once by ``finish_request``)."""

    __slots__ = ("accept", "content_type", "encoding", "error", "head", "metadata", "method", "path", "te", "timeout")

    def __init__(self) -> None:
        self.method: Optional[str] = None
        self.path: Optional[str] = None
        self.content_type: Optional[str] = None
        self.te: Optional[str] = None
        self.timeout: Optional[float] = None
        self.encoding: Optional[str] = None
        self.accept: Tuple[str, ...] = ()
        self.metadata: Metadata = ()
        self.error: Optional[RequestRejected] = None  # the first error met; later headers are not read
        self.head: Optional[RequestHead] = None

    def copy(self) -> RequestScan:
        scan = RequestScan()
        scan.method = self.method
        scan.path = self.path
        scan.content_type = self.content_type
        scan.te = self.te
        scan.timeout = self.timeout
        scan.encoding = self.encoding
        scan.accept = self.accept
        scan.metadata = self.metadata
        scan.error = self.error
        return scan


def scan_request(headers: Sequence[Tuple[str, str]], before: Optional[RequestScan] = None) -> RequestScan:
    """Read a run of request headers, after those ``before`` read (not changed)."""
    scan = RequestScan() if before is None else before.copy()
    if scan.error is not None:
        return scan
    metadata: List[Metadatum] = []
    for name, value in headers:
        if name[0] == ":":
            if name == ":method":
                scan.method = value
            elif name == ":path":
                scan.path = value
            continue
        if name in _RESERVED:
            if name == "content-type":
                scan.content_type = value
            elif name == "te":
                scan.te = value
            elif name == "grpc-timeout":
                try:
                    scan.timeout = parse_timeout(value)
                except ValueError as exc:
                    scan.error = RequestRejected(400, StatusCode.INTERNAL, str(exc))
                    break
            elif name == "grpc-encoding":
                scan.encoding = value
            elif name == "grpc-accept-encoding":
                scan.accept = _accept_list(value)
            continue
        if name.endswith("-bin"):
            try:
                metadata.append(_metadatum((name, decode_bin_value(value))))
            except ValueError as exc:
                scan.error = RequestRejected(400, StatusCode.INTERNAL, str(exc))
                break
        else:
            metadata.append(_metadatum((name, value)))
    if metadata:
        scan.metadata += tuple(metadata)
    return scan


def finish_request(scan: RequestScan) -> RequestHead:
    """Judge a scanned request whole: its head, or RequestRejected with the HTTP
    status and gRPC status to answer with when it is not an acceptable gRPC request."""
    if scan.head is not None:
        return scan.head
    error = scan.error
    if error is not None:  # a new one: a raised exception keeps its traceback
        raise RequestRejected(error.http_status, error.code, error.message)
    method, path, content_type, encoding = scan.method, scan.path, scan.content_type, scan.encoding
    if method != "POST":
        raise RequestRejected(405, StatusCode.INTERNAL, f"method {method!r} not allowed, gRPC uses POST")
    if content_type is None or not content_type.startswith("application/grpc"):
        raise RequestRejected(415, StatusCode.INTERNAL, f"content-type {content_type!r} is not application/grpc")
    if scan.te != "trailers":
        raise RequestRejected(400, StatusCode.INTERNAL, 'missing "te: trailers" header')
    if not path or path[0] != "/" or path.count("/") != 2 or path.endswith("/"):
        raise RequestRejected(200, StatusCode.UNIMPLEMENTED, f"malformed method path {path!r}")
    if encoding == "identity":
        encoding = None
    elif encoding is not None and encoding not in SUPPORTED:
        raise RequestRejected(
            200,
            StatusCode.UNIMPLEMENTED,
            f"grpc-encoding {encoding!r} is not supported (supported: {ACCEPT_ENCODING})",
        )
    scan.head = RequestHead(path, content_type, scan.timeout, encoding, scan.accept, scan.metadata)
    return scan.head


def extend_request(head: RequestHead, more: Sequence[Tuple[str, str]]) -> Optional[RequestHead]:
    """The head of a request whose headers are ``head``'s and then ``more``, where
    ``more`` is only custom metadata (no pseudo-header, reserved or binary header):
    what ``finish_request(scan_request(more, scan))`` gives, for a scan whose head
    is ``head``. None otherwise."""
    metadata: List[Metadatum] = []
    for name, value in more:
        if name[0] == ":" or name in _RESERVED or name.endswith("-bin"):
            return None
        metadata.append(_metadatum((name, value)))
    return RequestHead(
        head.method,
        head.content_type,
        head.timeout,
        head.encoding,
        head.accept_encoding,
        head.metadata + tuple(metadata),
    )


def parse_request(headers: Sequence[Tuple[str, str]]) -> RequestHead:
    """Validate a request header list; raise RequestRejected with the HTTP status
    and gRPC status to answer with when it is not an acceptable gRPC request."""
    return finish_request(scan_request(headers))


def read_request(headers: Sequence[Tuple[str, str]], memo: Optional[List[Any]], covered: int) -> RequestHead:
    """parse_request, for a request whose first ``covered`` headers are those of the
    other requests that share ``memo`` (the engine's ``RequestReceived.memo`` and
    ``memo_fields``): they are read once, and kept in the memo. A grpcio client's 9
    headers cost about 24k instructions to read, 8% of a unary call."""
    if memo is None:
        return parse_request(headers)
    scan: Optional[RequestScan] = memo[0]
    if scan is None:
        scan = memo[0] = scan_request(headers[:covered])
        try:
            finish_request(scan)  # keeps its head in it, if it is a request on its own
        except RequestRejected:
            pass
    if covered < len(headers):
        more = headers[covered:]
        if scan.head is not None:
            head = extend_request(scan.head, more)  # only metadata follows: most often
            if head is not None:
                return head
        return finish_request(scan_request(more, scan))
    return finish_request(scan)


def encode_metadata(metadata: Optional[Sequence[Tuple[str, str | bytes]]]) -> List[Tuple[bytes, bytes]]:
    """A handler's metadata -> header fields.

    Keys must be lowercase ``[0-9a-z_.-]``; values of ``-bin`` keys are sent as base64
    without padding (the form gRPC implementations send), other values must be printable
    ASCII (0x20-0x7E). Keys the protocol or HTTP/2 owns are dropped silently. Raises
    ``ValueError`` naming the key for an invalid key or value.
    """
    out: List[Tuple[bytes, bytes]] = []
    if not metadata:
        return out
    for item in metadata:
        key, value = item[0], item[1]
        if not isinstance(key, str) or not _LEGAL_KEY.fullmatch(key):
            raise ValueError(f"metadata key {key!r} is invalid")
        if key in _NOT_USER_METADATA:
            continue
        if key.endswith("-bin"):
            if isinstance(value, str):
                raw = value.encode()
            elif isinstance(value, (bytes, bytearray, memoryview)):
                raw = bytes(value)
            else:
                raise ValueError(f"metadata value for {key!r} must be bytes or str: {value!r}")
            out.append((key.encode(), base64.b64encode(raw).rstrip(b"=")))
            continue
        if isinstance(value, str):
            if not value.isascii():
                raise ValueError(f"metadata value for {key!r} must be ASCII: {value!r}")
            text = value.encode("ascii")
        elif isinstance(value, bytes):
            text = value
        else:
            raise ValueError(f"metadata value for {key!r} must be str: {value!r}")
        if any(c < 0x20 or c > 0x7E for c in text):
            raise ValueError(f"metadata value for {key!r} has characters outside 0x20-0x7E: {value!r}")
        out.append((key.encode(), text))
    return out


# grpc-message is percent-encoded UTF-8: everything outside 0x20-0x7E, and '%'.
_SAFE_MESSAGE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def encode_message_header(details: str) -> bytes:
    return quote(details, safe=_SAFE_MESSAGE, encoding="utf-8", errors="replace").encode("ascii")


def decode_message_header(value: str) -> str:
    return unquote(value, encoding="utf-8", errors="replace")


# --- response header blocks ---------------------------------------------------

_block_cache: Dict[Tuple[str, Optional[str]], bytes] = {}


def response_headers_block(
    content_type: str, encoding: Optional[str], metadata: Sequence[Tuple[bytes, bytes]] = ()
) -> bytes:
    """HEADERS of a response. Without metadata the block is cached."""
    if not metadata:
        key = (content_type, encoding)
        block = _block_cache.get(key)
        if block is None:
            if len(_block_cache) > 64:
                _block_cache.clear()
            block = encode_headers(_response_fields(content_type, encoding))
            _block_cache[key] = block
        return block
    return encode_headers(_response_fields(content_type, encoding) + list(metadata))


def _response_fields(content_type: str, encoding: Optional[str]) -> List[Tuple[bytes, bytes]]:
    fields = [(b":status", b"200"), (b"content-type", content_type.encode("latin-1"))]
    if encoding is not None:
        fields.append((b"grpc-encoding", encoding.encode()))
    fields.append((b"grpc-accept-encoding", ACCEPT_ENCODING.encode()))
    return fields


_OK_TRAILERS = encode_headers([(b"grpc-status", b"0")])


def trailers_block(
    code: int,
    details: Optional[str],
    metadata: Sequence[Tuple[bytes, bytes]] = (),
    status_details: Optional[bytes] = None,
) -> bytes:
    """Trailers of a response that already sent its HEADERS."""
    if code == 0 and not details and not metadata and status_details is None:
        return _OK_TRAILERS
    return encode_headers(_status_fields(code, details, metadata, status_details))


def trailers_only_block(
    http_status: int,
    content_type: str,
    code: int,
    details: Optional[str],
    metadata: Sequence[Tuple[bytes, bytes]] = (),
    status_details: Optional[bytes] = None,
) -> bytes:
    """A Trailers-Only response: one HEADERS frame that ends the stream."""
    fields = [
        (b":status", str(http_status).encode()),
        (b"content-type", content_type.encode("latin-1")),
        (b"grpc-accept-encoding", ACCEPT_ENCODING.encode()),
    ]
    return encode_headers(fields + _status_fields(code, details, metadata, status_details))


def _status_fields(
    code: int,
    details: Optional[str],
    metadata: Sequence[Tuple[bytes, bytes]],
    status_details: Optional[bytes],
) -> List[Tuple[bytes, bytes]]:
    fields = [(b"grpc-status", str(code).encode())]
    if details:
        fields.append((b"grpc-message", encode_message_header(details)))
    if status_details is not None:
        fields.append((b"grpc-status-details-bin", base64.b64encode(status_details).rstrip(b"=")))
    fields.extend(metadata)
    return fields


# --- message framing (5-byte prefix: flag, big-endian length) ------------------

_PREFIX = struct.Struct(">BI")


def frame_message(payload: bytes, compressed: bool = False) -> bytes:
    return _PREFIX.pack(1 if compressed else 0, len(payload)) + payload


# A message ready for the wire: the bytes of a small one, or (prefix, payload) of one of
# LARGE_MESSAGE bytes or more, which is then never copied just to put 5 bytes before it.
Framed = Union[bytes, Tuple[bytes, bytes]]
LARGE_MESSAGE = 64 * 1024


def frame_for_wire(payload: bytes, compressed: bool = False) -> Framed:
    if len(payload) < LARGE_MESSAGE:
        return _PREFIX.pack(1 if compressed else 0, len(payload)) + payload
    return (_PREFIX.pack(1 if compressed else 0, len(payload)), payload)


def framed_size(framed: Framed) -> int:
    if type(framed) is tuple:
        return len(framed[0]) + len(framed[1])
    return len(framed)


class MessageDecoder:
    """Splits a request body into length-prefixed messages, across and within
    DATA frames. Yields ``(compressed, payload)``; enforces the size limit on the
    declared length, before buffering the message.

    A message of ``LARGE_MESSAGE`` bytes or more that does not end in the data fed is
    collected as the pieces it arrives in and joined once when it ends: each of its
    bytes is copied once here (a growing buffer copied it in, grew, and copied it out).
    Smaller leftovers (a message or prefix cut by a frame) wait in a small buffer.

    ``feed_pieces`` takes a payload as views of the bytes read (the engine's
    ``DataReceived.pieces``): a large message's pieces are then kept as views, not
    copied, and joined at its end, its only copy in Python. A view pins the whole
    buffer it looks into, so the views one feed leaves kept cover at least half of
    their buffer, or are joined at once: what is pinned stays within twice what is held."""

    __slots__ = ("_buffer", "_chunked", "_chunks", "_flag", "_limit", "_need")

    def __init__(self, limit: int) -> None:
        self._buffer = bytearray()
        self._limit = limit
        self._chunks: Optional[List[Union[bytes, memoryview]]] = None  # the pieces of a large message
        self._chunked = 0  # bytes in _chunks
        self._need = 0  # the large message's length
        self._flag = False  # and whether it is compressed

    def feed_pieces(self, pieces: List[memoryview]) -> List[Tuple[bool, bytes]]:
        """``feed`` for a payload given as views of one buffer, in order."""
        out: List[Tuple[bool, bytes]] = []
        chunks = self._chunks
        taken = 0
        if chunks is not None:
            # Inside a large message: the pieces it does not end are kept as they are.
            want = self._need - self._chunked
            for piece in pieces:
                if len(piece) >= want:
                    break
                chunks.append(piece)
                want -= len(piece)
                taken += 1
            self._chunked = self._need - want
        for piece in pieces[taken:] if taken else pieces:
            out += self.feed(piece)
        chunks = self._chunks
        if chunks and type(chunks[-1]) is memoryview:
            self._settle_views(chunks, pieces[0].obj)
        return out

    @staticmethod
    def _settle_views(chunks: List[Union[bytes, memoryview]], buffer: object) -> None:
        """Join the views of ``buffer`` that end ``chunks`` if they cover less than half
        of it (a few bytes kept must not pin a whole read)."""
        kept = count = 0
        for piece in reversed(chunks):
            if type(piece) is not memoryview or piece.obj is not buffer:
                break
            kept += len(piece)
            count += 1
        if count and 2 * kept < len(buffer):  # type: ignore[arg-type]
            chunks[-count:] = [b"".join(chunks[-count:])]

    def feed(self, data: Union[bytes, memoryview]) -> List[Tuple[bool, bytes]]:
        out: List[Tuple[bool, bytes]] = []
        pos = 0
        chunks = self._chunks
        if chunks is not None:
            want = self._need - self._chunked
            if len(data) < want:
                chunks.append(data)
                self._chunked += len(data)
                return out
            chunks.append(data if want == len(data) else data[:want])
            out.append((self._flag, b"".join(chunks)))
            self._chunks = None
            self._chunked = 0
            if want == len(data):
                return out
            pos = want
        buf = self._buffer
        if not buf and not pos and len(data) >= 5:
            # Fast path: one whole message in one DATA frame.
            flag, length = _PREFIX.unpack_from(data)
            if length + 5 == len(data) and flag <= 1 and length <= self._limit:
                return [(flag == 1, data[5:] if type(data) is bytes else bytes(data[5:]))]
        if buf:
            buf += memoryview(data)[pos:]
            src: Union[bytes, bytearray, memoryview] = buf
            pos = 0
        else:
            src = data
        size = len(src)
        # Messages are copied out through a view (a bytearray slice would be one more
        # copy); the view is released before the buffer changes size (PyPy too).
        with memoryview(src) as view:
            while size - pos >= 5:
                flag, length = _PREFIX.unpack_from(src, pos)
                if flag > 1:
                    raise ProtocolViolation(StatusCode.INTERNAL, f"invalid message compressed-flag {flag}")
                if length > self._limit:
                    raise ProtocolViolation(
                        StatusCode.RESOURCE_EXHAUSTED,
                        f"Received message larger than max ({length} vs. {self._limit})",
                    )
                end = pos + 5 + length
                if end > size:
                    if length >= LARGE_MESSAGE:
                        begun = size - pos - 5
                        if not begun:
                            self._chunks = []
                        elif src is data and type(data) is memoryview:
                            self._chunks = [data[pos + 5 :]]  # a view, settled by feed_pieces
                        else:
                            self._chunks = [bytes(view[pos + 5 : size])]
                        self._chunked = begun
                        self._need = length
                        self._flag = flag == 1
                        pos = size
                    break
                out.append((flag == 1, bytes(view[pos + 5 : end])))
                pos = end
            rest = bytes(view[pos:]) if src is not buf and pos < size else b""
        if src is buf:
            if pos:
                del buf[:pos]
        elif rest:
            buf += rest
        return out

    @property
    def partial(self) -> bool:
        """True when a message has begun but not ended (a truncated body at EOS)."""
        return bool(self._buffer) or self._chunks is not None

    @property
    def buffered(self) -> int:
        """Bytes held of a message that has not ended yet (its prefix included)."""
        if self._chunks is not None:
            return 5 + self._chunked
        return len(self._buffer)

    @property
    def missing(self) -> int:
        """Bytes still to come to end the message begun (0 if none is)."""
        if self._chunks is not None:
            return self._need - self._chunked
        buf = self._buffer
        if not buf:
            return 0
        if len(buf) < 5:
            return 5 - len(buf)
        length: int = _PREFIX.unpack_from(buf)[1]
        return max(0, 5 + length - len(buf))

    def clear(self) -> None:
        self._buffer = bytearray()
        self._chunks = None
        self._chunked = 0
