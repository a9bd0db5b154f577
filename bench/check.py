"""Check with a grpcio client that a benchmark server answers bench.Echo/Unary correctly.

Usage: python bench/check.py PORT [--host 127.0.0.1]. Exit status 0 when every call
echoes its payload; otherwise prints what went wrong on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys

import gen
import grpc


def check(host: str, port: int, calls: int = 3, timeout: float = 5.0) -> str | None:
    """Return None when the server echoes correctly, else a description of the problem."""
    pb2, pb2_grpc = gen.load()
    target = f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return f"could not connect to {target} within {timeout:g}s"
        stub = pb2_grpc.EchoStub(channel)
        payloads = [b"x" * gen.PAYLOAD_SIZE, b"", os.urandom(gen.PAYLOAD_SIZE)]
        for i in range(calls):
            payload = payloads[i % len(payloads)]
            try:
                reply = stub.Unary(pb2.EchoMsg(payload=payload), timeout=timeout)
            except grpc.RpcError as err:
                code = err.code() if hasattr(err, "code") else "?"
                details = err.details() if hasattr(err, "details") else str(err)
                return f"call {i} failed: {code}: {details}"
            if reply.payload != payload:
                return f"call {i}: wrong echo ({len(reply.payload)} bytes back for {len(payload)} sent)"
    return None


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    problem = check(args.host, args.port, timeout=args.timeout)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
