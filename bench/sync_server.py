"""Shared code of the sync servers: grpcio's and puregrpc's (same API), and ``puregrpc serve``.

Prints the bound port on stdout once the server is started; exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import FrameType, ModuleType
from typing import Any, Callable, Iterator, Optional, Tuple

import gen

MAX_WORKERS = 10


def make_servicer(pb2: Any, pb2_grpc: Optional[ModuleType] = None) -> Any:
    """The echo servicer (see echo.proto), on generated code's base class when there is one."""
    base: Any = pb2_grpc.EchoServicer if pb2_grpc is not None else object
    EchoMsg, StreamSummary = pb2.EchoMsg, pb2.StreamSummary
    pattern = gen.pattern

    class EchoServicer(base):  # type: ignore[misc]
        def Unary(self, request: Any, context: Any) -> Any:
            return EchoMsg(payload=request.payload)

        def ServerStream(self, request: Any, context: Any) -> Iterator[Any]:
            payload = pattern(request.size)
            for seq in range(request.count):
                yield EchoMsg(payload=payload, seq=seq)

        def ClientStream(self, request_iterator: Iterator[Any], context: Any) -> Any:
            count = size = bad = 0
            for msg in request_iterator:
                payload = msg.payload
                if msg.seq != count or payload != pattern(len(payload)):
                    bad += 1
                count += 1
                size += len(payload)
            return StreamSummary(count=count, bytes=size, bad=bad)

        def Bidi(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
            for msg in request_iterator:
                yield EchoMsg(payload=msg.payload, seq=msg.seq)

    return EchoServicer()


def load_for_puregrpc() -> Tuple[Any, Optional[ModuleType]]:
    """(echo_pb2, echo_pb2_grpc or None): None where grpcio does not import (PyPy, --runtime)."""
    pb2 = gen.load_pb2()
    try:
        _, pb2_grpc = gen.load()
    except ImportError:
        return pb2, None
    return pb2, pb2_grpc


def add_to_server(server: Any, pb2: Any, pb2_grpc: Optional[ModuleType], servicer: Any) -> None:
    """Register the servicer as generated code does, or from the descriptor without grpcio."""
    if pb2_grpc is not None:
        pb2_grpc.add_EchoServicer_to_server(servicer, server)
    else:
        import puregrpc

        puregrpc.add_servicer(server, pb2.DESCRIPTOR.services_by_name["Echo"], servicer)


def serve(server_factory: Callable[[ThreadPoolExecutor], Any], pb2: Any, pb2_grpc: Optional[ModuleType]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()

    server = server_factory(ThreadPoolExecutor(max_workers=MAX_WORKERS))
    add_to_server(server, pb2, pb2_grpc, make_servicer(pb2, pb2_grpc))
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
