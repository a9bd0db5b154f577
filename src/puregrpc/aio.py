"""puregrpc's asyncio server: a drop-in for ``grpc.aio.server(...)``.

The server runs on the loop that awaits ``start()`` (``asyncio.run(main())`` works,
uvloop too); async handlers run as tasks on it, with no thread hop; sync handlers
run in ``migration_thread_pool``. It is the same server as ``puregrpc.server()``:
one HTTP/2 engine, one call core, one lifecycle (docs/lifecycle.md).
"""

from __future__ import annotations

import abc
from typing import Any, Awaitable, Callable

from ._aio_call import AioServicerContext as ServicerContext
from ._aio_call import eof as _eof
from ._aio_server import Server, server
from ._errors import AbortError


class ServerInterceptor(abc.ABC):
    """An asyncio server interceptor, as ``grpc.aio.ServerInterceptor``."""

    @abc.abstractmethod
    async def intercept_service(self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any) -> Any:
        """Return the handler for the call: ``await continuation(handler_call_details)``,
        or one of your own."""


def __getattr__(name: str) -> Any:
    # EOF is grpc.aio.EOF where grpcio's aio module is loaded, so that code written for
    # grpc.aio (``if message is grpc.aio.EOF``) and for puregrpc.aio both see the end.
    if name == "EOF":
        return _eof()
    raise AttributeError(f"module 'puregrpc.aio' has no attribute {name!r}")


__all__ = [
    "AbortError",  # and EOF (see __getattr__)
    "Server",
    "ServerInterceptor",
    "ServicerContext",
    "server",
]
