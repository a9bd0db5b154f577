"""Benchmark server: grpclib (pure Python, asyncio; uvloop when installed).

Prints the bound port on stdout once the server is started; exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from typing import Any, Dict, List, Optional

import gen
from grpclib.const import Cardinality, Handler
from grpclib.server import Server, Stream


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


class EchoService:
    """Hand-written equivalent of grpclib's generated base class for bench.Echo (echo.proto)."""

    def __init__(self, pb2: Any) -> None:
        self._pb2 = pb2

    async def Unary(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self._pb2.EchoMsg(payload=request.payload))

    async def ServerStream(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        EchoMsg = self._pb2.EchoMsg
        payload = gen.pattern(request.size)
        for seq in range(request.count):
            await stream.send_message(EchoMsg(payload=payload, seq=seq))

    async def ClientStream(self, stream: Stream[Any, Any]) -> None:
        count = size = bad = 0
        async for msg in stream:
            payload = msg.payload
            if msg.seq != count or payload != gen.pattern(len(payload)):
                bad += 1
            count += 1
            size += len(payload)
        await stream.send_message(self._pb2.StreamSummary(count=count, bytes=size, bad=bad))

    async def Bidi(self, stream: Stream[Any, Any]) -> None:
        EchoMsg = self._pb2.EchoMsg
        async for msg in stream:
            await stream.send_message(EchoMsg(payload=msg.payload, seq=msg.seq))

    def __mapping__(self) -> Dict[str, Handler]:
        pb2 = self._pb2
        return {
            gen.METHOD_PATH: Handler(self.Unary, Cardinality.UNARY_UNARY, pb2.EchoMsg, pb2.EchoMsg),
            gen.SERVER_STREAM_PATH: Handler(
                self.ServerStream, Cardinality.UNARY_STREAM, pb2.StreamRequest, pb2.EchoMsg
            ),
            gen.CLIENT_STREAM_PATH: Handler(
                self.ClientStream, Cardinality.STREAM_UNARY, pb2.EchoMsg, pb2.StreamSummary
            ),
            gen.BIDI_PATH: Handler(self.Bidi, Cardinality.STREAM_STREAM, pb2.EchoMsg, pb2.EchoMsg),
        }


async def main(host: str, port: int) -> int:
    pb2 = gen.load_pb2()
    server = Server([EchoService(pb2)])

    # proto must be IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when
    # the listening socket says so, and without it grpclib's three writes per response
    # (headers, message, trailers) meet Nagle and delayed ACKs: ~40 ms per call.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    await server.start(sock=sock)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        print(f"stopping on {sig.name}", file=sys.stderr, flush=True)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    print(sock.getsockname()[1], flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    return 0


def run(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)

    coro = main(args.host, args.port)
    if loop_name() == "uvloop":
        import uvloop

        if hasattr(uvloop, "run"):
            return int(uvloop.run(coro))
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(coro)


if __name__ == "__main__":
    sys.exit(run())
