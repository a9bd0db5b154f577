"""The servicer most integration tests run: behaviour chosen by the request."""

from __future__ import annotations

import time
from typing import Any, Iterator

import puregrpc


def _maybe_fail(request: Any, context: Any) -> None:
    if request.status:
        context.abort(puregrpc.StatusCode(_code(request.status)), request.details)


def _code(number: int) -> Any:
    for code in puregrpc.StatusCode:
        if code.value[0] == number:
            return code.value
    raise ValueError(number)


def _sleep(request: Any, context: Any) -> None:
    """Sleep cooperatively: stop early when the RPC is no longer active."""
    end = time.monotonic() + request.sleep
    while time.monotonic() < end and context.is_active():
        time.sleep(0.01)


class EchoServicer:
    def __init__(self, pb: Any) -> None:
        self.pb = pb

    def Unary(self, request: Any, context: Any) -> Any:
        _sleep(request, context)
        _maybe_fail(request, context)
        payload = request.payload or b"x" * request.response_size
        return self.pb.EchoResponse(message=request.message, payload=payload)

    def ServerStream(self, request: Any, context: Any) -> Iterator[Any]:
        _maybe_fail(request, context)
        for index in range(request.count):
            _sleep(request, context)
            yield self.pb.EchoResponse(message=request.message, payload=request.payload, index=index)

    def ClientStream(self, request_iterator: Iterator[Any], context: Any) -> Any:
        count = 0
        total = 0
        last = ""
        for request in request_iterator:
            count += 1
            total += len(request.payload)
            last = request.message
            _maybe_fail(request, context)
        return self.pb.EchoResponse(message=last, index=count, payload=str(total).encode())

    def BidiStream(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for index, request in enumerate(request_iterator):
            _maybe_fail(request, context)
            yield self.pb.EchoResponse(message=request.message, payload=request.payload, index=index)
