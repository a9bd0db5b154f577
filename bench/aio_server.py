"""Shared code of the asyncio servers with grpc.aio's API: grpc.aio's own and puregrpc.aio.

The servicer is echo.proto's, written with ``async def`` (async generators for the
streaming replies), as a grpc.aio user writes it. Prints the bound port on stdout once the
server is started; exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from types import ModuleType
from typing import Any, AsyncIterator, Callable, Optional

import gen
import sync_server


def make_servicer(pb2: Any, pb2_grpc: Optional[ModuleType] = None) -> Any:
    base: Any = pb2_grpc.EchoServicer if pb2_grpc is not None else object
    EchoMsg, StreamSummary = pb2.EchoMsg, pb2.StreamSummary
    pattern = gen.pattern

    class AsyncEchoServicer(base):  # type: ignore[misc]
        async def Unary(self, request: Any, context: Any) -> Any:
            return EchoMsg(payload=request.payload)

        async def ServerStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
            payload = pattern(request.size)
            for seq in range(request.count):
                yield EchoMsg(payload=payload, seq=seq)

        async def ClientStream(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
            count = size = bad = 0
            async for msg in request_iterator:
                payload = msg.payload
                if msg.seq != count or payload != pattern(len(payload)):
                    bad += 1
                count += 1
                size += len(payload)
            return StreamSummary(count=count, bytes=size, bad=bad)

        async def Bidi(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for msg in request_iterator:
                yield EchoMsg(payload=msg.payload, seq=msg.seq)

    return AsyncEchoServicer()


async def serve(make_server: Callable[[], Any], pb2: Any, pb2_grpc: Optional[ModuleType], host: str, port: int) -> int:
    server = make_server()
    sync_server.add_to_server(server, pb2, pb2_grpc, make_servicer(pb2, pb2_grpc))
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        print(f"could not bind {host}:{port}", file=sys.stderr)
        return 1
    await server.start()

    loop = asyncio.get_running_loop()
    stopping = []

    def on_signal(sig: signal.Signals) -> None:
        print(f"stopping on {sig.name}", file=sys.stderr, flush=True)
        stopping.append(loop.create_task(server.stop(0)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    print(bound, flush=True)
    await server.wait_for_termination()
    for task in stopping:
        await task
    print("terminated", file=sys.stderr, flush=True)
    return 0


def main(make_server: Callable[[], Any], pb2: Any, pb2_grpc: Optional[ModuleType], use_uvloop: bool) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    coro = serve(make_server, pb2, pb2_grpc, args.host, args.port)
    if use_uvloop:
        import uvloop

        if hasattr(uvloop, "run"):
            return int(uvloop.run(coro))
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(coro)


def loop_name() -> str:
    """'uvloop' where it imports, else 'asyncio' (as grpclib_server.py chooses)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
