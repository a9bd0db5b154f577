"""The four RPC kinds through every way of registering handlers."""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator

import grpc
import pytest
from echo_servicer import EchoServicer

import puregrpc

from ._support import TIMEOUT, capture_log, serve

SERVICE = "puregrpc.test.EchoService"


def exercise_all_kinds(channel: grpc.Channel, pb: Any, pb_grpc: Any) -> None:
    """Call the four methods through the generated stub and check every answer."""
    stub = pb_grpc.EchoServiceStub(channel)
    reply = stub.Unary(pb.EchoRequest(message="one", payload=b"\x00\x01"), timeout=TIMEOUT)
    assert (reply.message, reply.payload) == ("one", b"\x00\x01")

    replies = list(stub.ServerStream(pb.EchoRequest(message="s", count=5), timeout=TIMEOUT))
    assert [r.index for r in replies] == [0, 1, 2, 3, 4]
    assert {r.message for r in replies} == {"s"}

    requests = [pb.EchoRequest(message=f"m{i}", payload=b"ab") for i in range(7)]
    reply = stub.ClientStream(iter(requests), timeout=TIMEOUT)
    assert (reply.message, reply.index, reply.payload) == ("m6", 7, b"14")

    replies = list(stub.BidiStream(iter(requests), timeout=TIMEOUT))
    assert [(r.message, r.index) for r in replies] == [(f"m{i}", i) for i in range(7)]

    # Nothing sent on a client stream: still a valid RPC.
    reply = stub.ClientStream(iter(()), timeout=TIMEOUT)
    assert (reply.index, reply.payload) == (0, b"0")
    assert list(stub.BidiStream(iter(()), timeout=TIMEOUT)) == []


def handler_dict(factory: Any, servicer: Any, pb: Any) -> Dict[str, Any]:
    """Method handlers built by ``factory`` (the ``grpc`` or ``puregrpc`` module)."""
    req, ser = pb.EchoRequest.FromString, pb.EchoResponse.SerializeToString
    return {
        "Unary": factory.unary_unary_rpc_method_handler(servicer.Unary, req, ser),
        "ServerStream": factory.unary_stream_rpc_method_handler(servicer.ServerStream, req, ser),
        "ClientStream": factory.stream_unary_rpc_method_handler(servicer.ClientStream, req, ser),
        "BidiStream": factory.stream_stream_rpc_method_handler(servicer.BidiStream, req, ser),
    }


def test_generated_code(pb: Any, pb_grpc: Any) -> None:
    def setup(server: puregrpc.Server) -> None:
        pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), server)

    with serve(setup) as running, running.channel() as ch:
        exercise_all_kinds(ch, pb, pb_grpc)


@pytest.mark.parametrize("factory", [grpc, puregrpc], ids=["grpc", "puregrpc"])
def test_generic_handler_factories(factory: Any, pb: Any, pb_grpc: Any) -> None:
    def setup(server: puregrpc.Server) -> None:
        handlers = handler_dict(factory, EchoServicer(pb), pb)
        server.add_generic_rpc_handlers((factory.method_handlers_generic_handler(SERVICE, handlers),))

    with serve(setup) as running, running.channel() as ch:
        exercise_all_kinds(ch, pb, pb_grpc)


@pytest.mark.parametrize("factory", [grpc, puregrpc], ids=["grpc", "puregrpc"])
def test_handlers_passed_to_server_constructor(factory: Any, pb: Any, pb_grpc: Any) -> None:
    generic = factory.method_handlers_generic_handler(SERVICE, handler_dict(factory, EchoServicer(pb), pb))
    with serve(handlers=[generic]) as running, running.channel() as ch:
        exercise_all_kinds(ch, pb, pb_grpc)


@pytest.mark.parametrize("factory", [grpc, puregrpc], ids=["grpc", "puregrpc"])
def test_registered_method_handlers_only(factory: Any, pb: Any, pb_grpc: Any) -> None:
    def setup(server: puregrpc.Server) -> None:
        server.add_registered_method_handlers(SERVICE, handler_dict(factory, EchoServicer(pb), pb))

    with serve(setup) as running, running.channel() as ch:
        exercise_all_kinds(ch, pb, pb_grpc)


def test_add_servicer_from_descriptor(pb: Any, pb_grpc: Any) -> None:
    descriptor = pb.DESCRIPTOR.services_by_name["EchoService"]

    def setup(server: puregrpc.Server) -> None:
        puregrpc.add_servicer(server, descriptor, EchoServicer(pb))

    with serve(setup) as running, running.channel() as ch:
        exercise_all_kinds(ch, pb, pb_grpc)


def test_service_handler_from_descriptor(pb: Any, pb_grpc: Any) -> None:
    descriptor = pb.DESCRIPTOR.services_by_name["EchoService"]
    handler = puregrpc.service_handler(descriptor, EchoServicer(pb))
    assert handler.service_name() == SERVICE
    with serve(handlers=[handler]) as running, running.channel() as ch:
        exercise_all_kinds(ch, pb, pb_grpc)


def _constant_unary(pb: Any, text: str) -> Any:
    return puregrpc.unary_unary_rpc_method_handler(
        lambda request, context: pb.EchoResponse(message=text),
        pb.EchoRequest.FromString,
        pb.EchoResponse.SerializeToString,
    )


def test_registered_wins_over_generic(pb: Any, pb_grpc: Any) -> None:
    def setup(server: puregrpc.Server) -> None:
        # The generic handler is added first and would answer every method.
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Unary": _constant_unary(pb, "generic")}),)
        )
        server.add_registered_method_handlers(SERVICE, {"Unary": _constant_unary(pb, "registered")})

    with serve(setup) as running, running.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        assert stub.Unary(pb.EchoRequest(), timeout=TIMEOUT).message == "registered"


def test_generic_handlers_consulted_in_order(pb: Any, pb_grpc: Any) -> None:
    class OnlyWhen(grpc.GenericRpcHandler):
        def __init__(self, key: str, text: str) -> None:
            self.key, self.text = key, text

        def service(self, details: Any) -> Any:
            if (self.key, "1") in tuple(details.invocation_metadata):
                return _constant_unary(pb, self.text)
            return None

    generics = [OnlyWhen("first", "first"), OnlyWhen("second", "second")]
    with serve(handlers=generics) as running, running.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        both = (("first", "1"), ("second", "1"))
        assert stub.Unary(pb.EchoRequest(), metadata=both, timeout=TIMEOUT).message == "first"
        second = (("second", "1"),)
        assert stub.Unary(pb.EchoRequest(), metadata=second, timeout=TIMEOUT).message == "second"
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(pb.EchoRequest(), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert info.value.details() == "Method not found!"


def test_generated_code_after_start_serves_through_generic(pb: Any, pb_grpc: Any) -> None:
    with serve() as running, running.channel() as ch:
        with capture_log() as log:
            pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), running.server)
        # The generic half of the generated code is live at once...
        exercise_all_kinds(ch, pb, pb_grpc)
        # ...the registered half is ignored, with a warning naming the service.
        warnings = log.messages(logging.WARNING)
        assert any(SERVICE in m and "started" in m for m in warnings), warnings


def test_registered_after_start_is_ignored_with_warning(pb: Any, pb_grpc: Any) -> None:
    with serve() as running, running.channel() as ch:
        with capture_log() as log:
            running.server.add_registered_method_handlers(SERVICE, {"Unary": _constant_unary(pb, "late")})
        warnings = [r for r in log.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert SERVICE in warnings[0].getMessage()
        stub = pb_grpc.EchoServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(pb.EchoRequest(), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        # A generic handler added after start is used.
        running.server.add_generic_rpc_handlers(
            (puregrpc.method_handlers_generic_handler(SERVICE, {"Unary": _constant_unary(pb, "late")}),)
        )
        assert stub.Unary(pb.EchoRequest(), timeout=TIMEOUT).message == "late"


def test_raw_bytes_handlers_without_serializers() -> None:
    """Handlers without (de)serializers see and return bytes."""

    def upper(request: bytes, context: Any) -> bytes:
        assert isinstance(request, bytes)
        return request.upper()

    def split(request: bytes, context: Any) -> Iterator[bytes]:
        yield from (bytes([b]) for b in request)

    def join(requests: Iterator[bytes], context: Any) -> bytes:
        return b"+".join(requests)

    def echo(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        yield from requests

    handlers: Dict[str, Any] = {
        "Upper": puregrpc.unary_unary_rpc_method_handler(upper),
        "Split": grpc.unary_stream_rpc_method_handler(split),
        "Join": puregrpc.stream_unary_rpc_method_handler(join),
        "Echo": grpc.stream_stream_rpc_method_handler(echo),
    }
    generic = grpc.method_handlers_generic_handler("raw.Bytes", handlers)
    with serve(handlers=[generic]) as running, running.channel() as ch:
        call: Callable[..., Any] = ch.unary_unary("/raw.Bytes/Upper")
        assert call(b"abc", timeout=TIMEOUT) == b"ABC"
        assert call(b"", timeout=TIMEOUT) == b""
        assert list(ch.unary_stream("/raw.Bytes/Split")(b"xyz", timeout=TIMEOUT)) == [
            b"x",
            b"y",
            b"z",
        ]
        assert ch.stream_unary("/raw.Bytes/Join")(iter([b"a", b"b"]), timeout=TIMEOUT) == b"a+b"
        assert list(ch.stream_stream("/raw.Bytes/Echo")(iter([b"1", b"", b"2"]), timeout=TIMEOUT)) == [
            b"1",
            b"",
            b"2",
        ]
