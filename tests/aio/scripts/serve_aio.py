"""An asyncio server under ``asyncio.run(serve())``, for the Ctrl+C tests.

usage: serve_aio.py FLAVOUR SHAPE
  FLAVOUR  grpcaio | puregrpc
  SHAPE    wait        ``await server.wait_for_termination()``
           finally     ``try: await server.wait_for_termination() finally: await server.stop(3)``

Prints ``PORT <n>`` once serving; the handler ``/aio.Test/Sleep`` sleeps the number of
seconds in its request and prints ``HANDLER started|finished|cancelled``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc


def say(line: str) -> None:
    print(line, flush=True)


async def sleep(request: bytes, context: Any) -> bytes:
    say("HANDLER started")
    try:
        await asyncio.sleep(float(request))
    except asyncio.CancelledError:
        say("HANDLER cancelled")
        raise
    say("HANDLER finished")
    return b"slept"


async def serve(flavour: str, shape: str) -> None:
    if flavour == "grpcaio":
        aio: Any = grpc.aio
    else:
        import puregrpc.aio as aio
    server = aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("aio.Test", {"Sleep": grpc.unary_unary_rpc_method_handler(sleep)}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    say(f"PORT {port}")
    if shape == "wait":
        await server.wait_for_termination()
        return
    try:
        await server.wait_for_termination()
    finally:
        say("STOPPING")
        await server.stop(3)
        say("STOPPED")


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
