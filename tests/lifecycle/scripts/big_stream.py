"""A service for ``puregrpc serve`` streaming large messages: ``Big`` answers the number
of 1 MiB messages it is asked for, each a new bytes object (as a serializer makes)."""

from __future__ import annotations

from typing import Any, Iterator

from puregrpc import method_handlers_generic_handler, unary_stream_rpc_method_handler

MiB = 1 << 20


def _big(request: bytes, context: Any) -> Iterator[bytes]:
    for i in range(int(request.decode())):
        yield bytes([i % 256]) * MiB


def register(server: Any) -> None:
    server.add_generic_rpc_handlers(
        (method_handlers_generic_handler("big.Stream", {"Big": unary_stream_rpc_method_handler(_big)}),)
    )
