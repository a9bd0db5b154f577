"""Check with a grpcio client that benchmark servers answer every bench.Echo method correctly.

Usage: python bench/check.py PORT [PORT ...] [--host 127.0.0.1]. Exit status 0 when every
server gives the expected replies (payloads, sequence numbers, summaries and status OK) on
all four methods; otherwise prints what went wrong, one line per server, on stderr and
exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, List, Optional

import gen
import grpc

MIB = 1024 * 1024


def check(host: str, port: int, timeout: float = 10.0) -> str | None:
    """Return None when the server answers correctly, else a description of the problem."""
    target = f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return f"could not connect to {target} within {timeout:g}s"
        try:
            return check_methods(channel, timeout)
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else "?"
            details = err.details() if hasattr(err, "details") else str(err)
            return f"{code}: {details}"


def check_methods(channel: grpc.Channel, timeout: float) -> str | None:
    pb2, pb2_grpc = gen.load()
    stub = pb2_grpc.EchoStub(channel)

    for i, payload in enumerate([b"x" * gen.PAYLOAD_SIZE, b"", os.urandom(gen.PAYLOAD_SIZE)]):
        reply, call = stub.Unary.with_call(pb2.EchoMsg(payload=payload), timeout=timeout)
        if reply.payload != payload or call.code() != grpc.StatusCode.OK:
            return f"Unary call {i}: wrong echo ({len(reply.payload)} bytes back for {len(payload)} sent)"

    for count, size in ((5, gen.PAYLOAD_SIZE), (3, MIB), (0, 10)):
        replies = stub.ServerStream(pb2.StreamRequest(count=count, size=size), timeout=timeout)
        got: List[Any] = list(replies)
        if len(got) != count:
            return f"ServerStream({count} x {size} B): {len(got)} messages"
        expected = gen.pattern(size)
        for seq, msg in enumerate(got):
            if msg.seq != seq or msg.payload != expected:
                return f"ServerStream({count} x {size} B): message {seq} wrong (seq {msg.seq}, {len(msg.payload)} B)"
        if replies.code() != grpc.StatusCode.OK:
            return f"ServerStream: status {replies.code()}"

    for count, size in ((3, MIB), (4, gen.PAYLOAD_SIZE), (0, 0)):
        msgs = [pb2.EchoMsg(payload=gen.pattern(size), seq=seq) for seq in range(count)]
        summary, call = stub.ClientStream.with_call(iter(msgs), timeout=timeout)
        if (summary.count, summary.bytes, summary.bad) != (count, count * size, 0) or call.code() != grpc.StatusCode.OK:
            return f"ClientStream({count} x {size} B): summary {summary.count}, {summary.bytes}, {summary.bad} bad"
    # The server really checks: one message out of place, one with a wrong payload.
    wrong = [pb2.EchoMsg(payload=gen.pattern(100), seq=0), pb2.EchoMsg(payload=gen.pattern(100), seq=5)]
    wrong.append(pb2.EchoMsg(payload=b"y" * 100, seq=2))
    summary = stub.ClientStream(iter(wrong), timeout=timeout)
    if (summary.count, summary.bad) != (3, 2):
        return f"ClientStream with 2 bad messages of 3: summary says {summary.count}, {summary.bad} bad"

    sent = [pb2.EchoMsg(payload=os.urandom(gen.PAYLOAD_SIZE), seq=seq) for seq in range(5)]
    sent.append(pb2.EchoMsg(payload=gen.pattern(MIB), seq=5))
    replies = stub.Bidi(iter(sent), timeout=timeout)
    got = list(replies)
    if [(m.seq, m.payload) for m in got] != [(m.seq, m.payload) for m in sent]:
        return f"Bidi: {len(got)} replies to {len(sent)} messages, not the same"
    if replies.code() != grpc.StatusCode.OK:
        return f"Bidi: status {replies.code()}"
    return None


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("ports", type=int, nargs="+")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    failed = 0
    for port in args.ports:
        problem = check(args.host, port, timeout=args.timeout)
        if problem:
            print(f"{port}: {problem}", file=sys.stderr, flush=True)
            failed += 1
        else:
            print(f"{port}: ok", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
