"""Micro-benchmark: 1 MiB gRPC messages through the server's sans-I/O layers, no sockets.

- send: frame a message (5-byte prefix), queue it on a stream, take the output bytes,
  as a server-streaming handler's messages go (the client's windows wide open; its
  largest frame ``--max-frame``: 16 KiB, HTTP/2's default and h2load's, or up to
  16 MiB - 1, which grpc's clients allow; ``--window 65535``: the client's windows
  small, topped up as the data comes, so most of a message waits in the stream's queue);
- receive: a client's 1 MiB messages in 16 KiB DATA frames, handed over in 64 KiB
  reads (``--read-size``; asyncio's transports read up to 256 KiB), through the engine
  and the message decoder (``DataReceived.pieces`` where the engine gives them).

glibc's allocator is tuned as the servers tune it (``puregrpc._malloc``).
CPU time (``time.process_time``) per MiB, best of ``--repeat``: what the Python layers
cost per byte, the figure that copies show up in. The socket, the client and the
handler's own work are not in it.

    python bench/large_bench.py [--messages 64] [--size 1048576] [--repeat 5] [--read-size 65536]
                                [--max-frame 16384] [--window 2147483647]
"""

from __future__ import annotations

import argparse
import struct
import time
from typing import List

import hpack

from puregrpc._h2 import events as ev
from puregrpc._h2.connection import PREFACE, H2Config, H2Connection

try:  # how the server frames a message to send (older trees: one copy with its prefix)
    from puregrpc._protocol import frame_for_wire
except ImportError:
    from puregrpc._protocol import frame_message as frame_for_wire  # type: ignore[assignment,unused-ignore]
from puregrpc import _malloc
from puregrpc._protocol import MessageDecoder, frame_message

READ_SIZE = 64 * 1024
FRAME_SIZE = 16 * 1024
WIDE = (1 << 31) - 1


def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">IBI", len(payload) << 8 | ftype, flags, sid) + payload


def request_headers(encoder: hpack.Encoder, sid: int, end_stream: bool) -> bytes:
    block = encoder.encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/bench.Echo/Stream"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    return frame(1, 0x4 | (0x1 if end_stream else 0), sid, block)


def opened_server(
    encoder: hpack.Encoder, end_stream: bool, max_frame: int = FRAME_SIZE, window: int = WIDE
) -> H2Connection:
    """A server engine with stream 1 open; the client's windows are ``window`` (both)."""
    server = H2Connection(H2Config())
    server.initiate_connection()
    settings = frame(4, 0, 0, struct.pack(">HI", 4, window) + struct.pack(">HI", 5, max_frame))
    opening = PREFACE + settings + frame(4, 1, 0, b"")
    if window > 65535:
        opening += frame(8, 0, 0, struct.pack(">I", window - 65535))
    server.receive_data(opening + request_headers(encoder, 1, end_stream))
    server.data_to_send()
    return server


def send_case(messages: int, size: int, max_frame: int = FRAME_SIZE, window: int = WIDE) -> float:
    payload = b"\x5a" * size
    server = opened_server(hpack.Encoder(), end_stream=True, max_frame=max_frame, window=window)
    server.send_headers(1, b"\x88")  # :status 200 (static table)
    out = 0
    start = time.process_time()
    for _ in range(messages):
        framed = frame_for_wire(payload)
        for piece in framed if isinstance(framed, tuple) else (framed,):
            server.send_data(1, piece)
        out += len(server.data_to_send())
        while server.pending_bytes(1):  # a small window: the client tops both up again
            credit = frame(8, 0, 1, struct.pack(">I", window - server.stream_send_window(1)))
            credit += frame(8, 0, 0, struct.pack(">I", window - server.outbound_window))
            server.receive_data(credit)
            out += len(server.data_to_send())
    elapsed = time.process_time() - start
    assert out >= messages * size, out
    return elapsed


def client_stream_bytes(messages: int, size: int, read_size: int = READ_SIZE) -> List[bytes]:
    body = b"".join(frame_message(b"\xa5" * size) for _ in range(messages))
    frames = b"".join(frame(0, 0, 1, body[i : i + FRAME_SIZE]) for i in range(0, len(body), FRAME_SIZE))
    return [frames[i : i + read_size] for i in range(0, len(frames), read_size)]


def receive_case(reads: List[bytes], messages: int, size: int) -> float:
    server = opened_server(hpack.Encoder(), end_stream=False)
    decoder = MessageDecoder(size + 1024)
    got = 0
    start = time.process_time()
    for chunk in reads:
        for event in server.receive_data(chunk):
            if isinstance(event, ev.DataReceived):
                pieces = getattr(event, "pieces", None)  # older trees: data only
                taken = decoder.feed(event.data) if pieces is None else decoder.feed_pieces(pieces)
                for _, message in taken:
                    got += len(message)
                server.acknowledge_received_data(1, event.flow_length)
        server.data_to_send()
    elapsed = time.process_time() - start
    assert got == messages * size, got
    return elapsed


def main() -> None:
    # As puregrpc serve and the bench servers do (PUREGRPC_MALLOC_TUNING=0: glibc's
    # defaults, under which every fresh 1 MiB buffer is page-faulted in).
    _malloc.tune()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=64)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--read-size", type=int, default=READ_SIZE, help="bytes per read (asyncio: up to 262144)")
    parser.add_argument("--max-frame", type=int, default=FRAME_SIZE, help="the client's SETTINGS_MAX_FRAME_SIZE")
    parser.add_argument(
        "--window", type=int, default=WIDE, help="the client's stream and connection windows, topped up as data comes"
    )
    args = parser.parse_args()
    mib = args.messages * args.size / (1 << 20)
    reads = client_stream_bytes(args.messages, args.size, args.read_size)
    # Warm-up: the allocator settles (glibc raises its mmap threshold once large blocks
    # are freed; before that every fresh 1 MiB buffer is page-faulted in).
    send_case(args.messages, args.size, args.max_frame, args.window)
    receive_case(reads, args.messages, args.size)
    send = min(send_case(args.messages, args.size, args.max_frame, args.window) for _ in range(args.repeat))
    receive = min(receive_case(reads, args.messages, args.size) for _ in range(args.repeat))
    print(
        f"{args.messages} messages of {args.size} bytes, reads of {args.read_size}, "
        f"frames of up to {args.max_frame} sent, windows of {args.window}, best of {args.repeat} (CPU time)"
    )
    print(f"send:    {send / mib * 1e6:8.0f} us per MiB  ({mib / send:8.0f} MiB/s of one core)")
    print(f"receive: {receive / mib * 1e6:8.0f} us per MiB  ({mib / receive:8.0f} MiB/s of one core)")


if __name__ == "__main__":
    main()
