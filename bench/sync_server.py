"""Shared code of the two sync servers: grpcio's and puregrpc's (same API).

Prints the bound port on stdout once the server is started; exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any, Callable

import gen

MAX_WORKERS = 10


def make_servicer(pb2: Any, pb2_grpc: Any) -> Any:
    class EchoServicer(pb2_grpc.EchoServicer):  # type: ignore[misc, name-defined]
        def Unary(self, request: Any, context: Any) -> Any:
            return pb2.EchoMsg(payload=request.payload)

    return EchoServicer()


def serve(server_factory: Callable[[ThreadPoolExecutor], Any], argv: list | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)

    pb2, pb2_grpc = gen.load()
    server = server_factory(ThreadPoolExecutor(max_workers=MAX_WORKERS))
    pb2_grpc.add_EchoServicer_to_server(make_servicer(pb2, pb2_grpc), server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    if not port:
        print(f"could not bind {args.host}:{args.port}", file=sys.stderr)
        return 1
    server.start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        print(f"stopping on {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        # Stop from another thread: stop() may block, and a signal handler should not.
        threading.Thread(target=server.stop, args=(0,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    print(port, flush=True)
    server.wait_for_termination()
    print("terminated", file=sys.stderr, flush=True)
    return 0
