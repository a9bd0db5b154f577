"""grpcio ``ServerInterceptor`` objects on a puregrpc server."""

from __future__ import annotations

from typing import Any, Callable, List

import grpc
import pytest
from echo_servicer import EchoServicer

import puregrpc

from ._support import TIMEOUT, serve


class Logging(grpc.ServerInterceptor):
    def __init__(self, name: str, log: List[str]) -> None:
        self.name = name
        self.log = log

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        self.log.append(f"{self.name}>")
        handler = continuation(details)
        self.log.append(f"<{self.name}")
        return handler


def test_first_interceptor_is_outermost(pb: Any, pb_grpc: Any) -> None:
    log: List[str] = []
    interceptors = [Logging("a", log), Logging("b", log), Logging("c", log)]

    def setup(server: puregrpc.Server) -> None:
        pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), server)

    with serve(setup, interceptors=interceptors) as running, running.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        assert stub.Unary(pb.EchoRequest(message="x"), timeout=TIMEOUT).message == "x"
        assert log == ["a>", "b>", "c>", "<c", "<b", "<a"]
        log.clear()
        # Interceptors run for unknown methods too (the lookup happens inside).
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/no.Such/Method")(b"", timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert log == ["a>", "b>", "c>", "<c", "<b", "<a"]


class Deny(grpc.ServerInterceptor):
    """Short-circuits: answers PERMISSION_DENIED unless the caller sent a token."""

    def __init__(self) -> None:
        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        self.seen_metadata: List[Any] = []

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        metadata = tuple(details.invocation_metadata)
        self.seen_metadata.append((details.method, metadata))
        if ("token", "secret") in metadata:
            return continuation(details)
        return self._deny


def test_short_circuit_and_metadata(pb: Any, pb_grpc: Any) -> None:
    deny = Deny()
    log: List[str] = []

    def setup(server: puregrpc.Server) -> None:
        pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), server)

    with (
        serve(setup, interceptors=[deny, Logging("inner", log)]) as running,
        running.channel() as ch,
    ):
        stub = pb_grpc.EchoServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(pb.EchoRequest(message="x"), metadata=(("token", "wrong"),), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "no token"
        assert log == []  # the inner interceptor never ran
        # The short-circuit handler is unary-unary, the method server-streaming:
        # grpcio's server uses the handler's shape; a unary answer still ends the call.
        reply = stub.Unary(
            pb.EchoRequest(message="ok"),
            metadata=(("token", "secret"), ("x-extra", "1")),
            timeout=TIMEOUT,
        )
        assert reply.message == "ok"
        assert log == ["inner>", "<inner"]
        method, metadata = deny.seen_metadata[-1]
        assert method == "/puregrpc.test.EchoService/Unary"
        assert ("token", "secret") in metadata and ("x-extra", "1") in metadata
        # user-agent is metadata too, as in grpcio
        assert any(key == "user-agent" for key, _ in metadata)


def test_interceptor_wraps_behaviour(pb: Any, pb_grpc: Any) -> None:
    """An interceptor may replace the handler with one wrapping the original behaviour."""

    class Suffix(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
            handler = continuation(details)
            if handler is None or handler.unary_unary is None:
                return handler
            inner = handler.unary_unary

            def wrapped(request: Any, context: Any) -> Any:
                reply = inner(request, context)
                reply.message += "!"
                return reply

            return grpc.unary_unary_rpc_method_handler(
                wrapped, handler.request_deserializer, handler.response_serializer
            )

    def setup(server: puregrpc.Server) -> None:
        pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), server)

    with serve(setup, interceptors=[Suffix()]) as running, running.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        assert stub.Unary(pb.EchoRequest(message="hey"), timeout=TIMEOUT).message == "hey!"
        replies = list(stub.ServerStream(pb.EchoRequest(message="s", count=2), timeout=TIMEOUT))
        assert [r.message for r in replies] == ["s", "s"]


def test_interceptor_raising_gives_unknown(pb: Any, pb_grpc: Any) -> None:
    class Broken(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
            raise RuntimeError("interceptor bug")

    def setup(server: puregrpc.Server) -> None:
        pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), server)

    with serve(setup, interceptors=[Broken()]) as running, running.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(pb.EchoRequest(), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNKNOWN
        assert info.value.details() == "Error in service handler!"  # as grpcio
