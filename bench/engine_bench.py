"""Micro-benchmark: unary-like exchanges through our HTTP/2 engine and through the
``h2`` library's server side, fed identical client bytes.

Each exchange: client HEADERS + DATA(END_STREAM) in; server HEADERS, DATA and
trailers (HEADERS END_STREAM) out; the application acknowledges the received data.
The client bytes are generated up front (real HPACK with a dynamic table, as a
client would send them), so only the server side is measured.

    python bench/engine_bench.py [-n 20000] [--batch 1]

``--batch`` is how many requests arrive per receive_data() call (1: one request
per read, like one stream in flight; 32: a pipelined burst).
"""

from __future__ import annotations

import argparse
import struct
import time
from typing import Callable, List

import h2.config
import h2.connection
import h2.events
import hpack

from puregrpc._h2 import events as ev
from puregrpc._h2.connection import PREFACE, H2Connection
from puregrpc._h2.hpack_encoder import encode_headers

REQUEST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/grpc.testing.EchoService/UnaryEcho"),
    (b":authority", b"localhost:50051"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
    (b"user-agent", b"grpc-python/1.60.0 grpc-c/37.0.0 (linux; chttp2)"),
    (b"grpc-accept-encoding", b"identity,deflate,gzip"),
    (b"grpc-timeout", b"9999m"),
]
MESSAGE = b"\x00" + struct.pack(">I", 100) + b"x" * 100
RESPONSE = [(b":status", b"200"), (b"content-type", b"application/grpc")]
TRAILERS = [(b"grpc-status", b"0")]


def frame(ftype: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">IBI", len(payload) << 8 | ftype, flags, sid) + payload


def client_bytes(n: int, batch: int, vary: bool = False) -> List[bytes]:
    """Preface + SETTINGS + SETTINGS ACK, then n requests grouped ``batch`` per chunk.

    With ``vary``, each request carries a header whose value changes every time
    (a request id), which the client's HPACK encoder adds to its dynamic table:
    every block then changes the table and must be fully decoded."""
    encoder = hpack.Encoder()
    # The client opens its receive windows wide, so responses never stall.
    big = (1 << 31) - 1
    settings = frame(4, 0, 0, struct.pack(">HI", 4, big))
    window = frame(8, 0, 0, struct.pack(">I", big - 65535))
    chunks = [PREFACE + settings + window + frame(4, 1, 0, b"")]
    group = bytearray()
    for i in range(n):
        sid = 2 * i + 1
        request = [*REQUEST, (b"x-request-id", b"%08d" % i)] if vary else REQUEST
        group += frame(1, 0x4, sid, encoder.encode(request))
        group += frame(0, 0x1, sid, MESSAGE)
        if (i + 1) % batch == 0:
            chunks.append(bytes(group))
            group = bytearray()
    if group:
        chunks.append(bytes(group))
    return chunks


def run_ours(chunks: List[bytes]) -> int:
    conn = H2Connection()
    conn.initiate_connection()
    response = encode_headers(RESPONSE)  # encoded once, as the gRPC layer does
    trailers = encode_headers(TRAILERS)
    done = 0
    now = 0.0
    RequestReceived = ev.RequestReceived
    DataReceived = ev.DataReceived
    for chunk in chunks:
        now += 0.0001
        for event in conn.receive_data(chunk, now):
            kind = type(event)
            if kind is DataReceived:
                assert isinstance(event, DataReceived)
                conn.acknowledge_received_data(event.stream_id, event.flow_length)
                if event.end_stream:
                    sid = event.stream_id
                    conn.send_headers(sid, response)
                    conn.send_data(sid, event.data)
                    conn.send_headers(sid, trailers, end_stream=True)
                    done += 1
            elif kind is RequestReceived or kind is ev.WindowUpdated:
                pass
            else:
                raise AssertionError(event)
        conn.data_to_send()
    return done


def run_h2(chunks: List[bytes]) -> int:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    conn.initiate_connection()
    done = 0
    for chunk in chunks:
        for event in conn.receive_data(chunk):
            if isinstance(event, h2.events.DataReceived):
                sid = event.stream_id
                conn.acknowledge_received_data(event.flow_controlled_length, sid)
                if event.stream_ended is not None:
                    conn.send_headers(sid, RESPONSE)
                    conn.send_data(sid, event.data)
                    conn.send_headers(sid, TRAILERS, end_stream=True)
                    done += 1
        conn.data_to_send()
    return done


def measure(fn: Callable[[List[bytes]], int], chunks: List[bytes], n: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = fn(chunks)
        elapsed = time.perf_counter() - start
        assert done == n, (fn.__name__, done)
        best = min(best, elapsed)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=20000, help="requests per run")
    parser.add_argument("--batch", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--repeat", type=int, default=3, help="best of")
    args = parser.parse_args()
    for vary in (False, True):
        for batch in args.batch:
            chunks = client_bytes(args.n, batch, vary)
            ours = measure(run_ours, chunks, args.n, args.repeat)
            theirs = measure(run_h2, chunks, args.n, args.repeat)
            kind = "new header per request" if vary else "repeated headers     "
            print(
                f"{kind} batch={batch:<3} puregrpc engine: {ours:>9,.0f} req/s   "
                f"h2 library: {theirs:>8,.0f} req/s   ratio: {ours / theirs:.1f}x"
            )


if __name__ == "__main__":
    main()
