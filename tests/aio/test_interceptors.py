"""grpc.aio.ServerInterceptor subclasses with an async intercept_service."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, List

import grpc

from ._support import TIMEOUT, error_of, generic, method


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for part in request.split(b","):
        yield part


def _handlers() -> grpc.GenericRpcHandler:
    return generic(
        {
            "Echo": grpc.unary_unary_rpc_method_handler(_echo),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        }
    )


class Recording(grpc.aio.ServerInterceptor):
    def __init__(self, name: str, log: List[Any]) -> None:
        self.name = name
        self.log = log

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        await asyncio.sleep(0)
        self.log.append((self.name, details.method, dict(details.invocation_metadata or ()).get("x-who")))
        return await continuation(details)


def test_interceptors_run_in_order_before_the_handler(served: Any) -> None:
    log: List[Any] = []
    interceptors = [Recording("first", log), Recording("second", log)]
    with served(_handlers(), interceptors=interceptors) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Echo"))(b"hi", metadata=(("x-who", "me"),), timeout=TIMEOUT) == b"hi"
        assert list(ch.unary_stream(method("Stream"))(b"a,b", timeout=TIMEOUT)) == [b"a", b"b"]
    assert log == [
        ("first", method("Echo"), "me"),
        ("second", method("Echo"), "me"),
        ("first", method("Stream"), None),
        ("second", method("Stream"), None),
    ]


class Gate(grpc.aio.ServerInterceptor):
    """Rejects calls without the right token by returning a handler of its own."""

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if ("token", "open sesame") in tuple((m[0], m[1]) for m in details.invocation_metadata or ()):
            return await continuation(details)

        async def deny(request: bytes, context: Any) -> bytes:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no token")
            return b""

        return grpc.unary_unary_rpc_method_handler(deny)


def test_interceptor_can_refuse_a_call(served: Any) -> None:
    with served(_handlers(), interceptors=[Gate()]) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("Echo"))(b"x", timeout=TIMEOUT))
        assert (err.code(), err.details()) == (grpc.StatusCode.PERMISSION_DENIED, "no token")
        call = ch.unary_unary(method("Echo"))
        assert call(b"x", metadata=(("token", "open sesame"),), timeout=TIMEOUT) == b"x"


class Wrapping(grpc.aio.ServerInterceptor):
    """Wraps the handler's behaviour: unary responses get a suffix, stream responses too."""

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: bytes, context: Any) -> bytes:
                return (await inner(request, context)) + b"!"

            return handler._replace(unary_unary=unary)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
                async for item in inner_stream(request, context):
                    yield item + b"!"

            return handler._replace(unary_stream=stream)
        return handler


def test_interceptor_can_wrap_the_handler(served: Any) -> None:
    with served(_handlers(), interceptors=[Wrapping()]) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Echo"))(b"x", timeout=TIMEOUT) == b"x!"
        assert list(ch.unary_stream(method("Stream"))(b"a,b", timeout=TIMEOUT)) == [b"a!", b"b!"]


def test_interceptor_sees_unknown_methods_and_none_is_unimplemented(served: Any) -> None:
    log: List[Any] = []
    with served(_handlers(), interceptors=[Recording("only", log), Wrapping()]) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("Missing"))(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert log == [("only", method("Missing"), None)]


class Failing(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        raise RuntimeError("interceptor broke")


def test_interceptor_exception_fails_the_call_not_the_server(served: Any) -> None:
    log: List[Any] = []

    class Selective(Failing):
        async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
            log.append(details.method)
            if details.method.endswith("Stream"):
                return await continuation(details)
            return await super().intercept_service(continuation, details)

    with served(_handlers(), interceptors=[Selective()]) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("Echo"))(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.UNKNOWN
        assert list(ch.unary_stream(method("Stream"))(b"still,up", timeout=TIMEOUT)) == [b"still", b"up"]
    assert log == [method("Echo"), method("Stream")]


def test_the_flavours_own_interceptor_base_class(served: Any, aio: Any) -> None:
    log: List[str] = []

    class Own(aio.ServerInterceptor):  # type: ignore[misc,name-defined]
        async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
            log.append(details.method)
            return await continuation(details)

    with served(_handlers(), interceptors=[Own()]) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Echo"))(b"own", timeout=TIMEOUT) == b"own"
    assert log == [method("Echo")]
