"""An asyncio service for ``puregrpc serve``: ``register`` is async, so the command serves
it with puregrpc.aio. ``Slow`` answers after the number of seconds it is sent."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from puregrpc import method_handlers_generic_handler, unary_unary_rpc_method_handler


async def _slow(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(float(request.decode()))
    return b"slept " + request


async def _where(request: bytes, context: Any) -> bytes:
    # The handler's thread: an async handler runs on the loop's (the main) thread.
    return threading.current_thread().name.encode()


async def register(server: Any) -> None:
    server.add_generic_rpc_handlers(
        (
            method_handlers_generic_handler(
                "aio.Service",
                {
                    "Slow": unary_unary_rpc_method_handler(_slow),
                    "Where": unary_unary_rpc_method_handler(_where),
                },
            ),
        )
    )
