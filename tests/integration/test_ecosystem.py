"""Libraries Python gRPC services already use, side by side on grpcio's server and
puregrpc's: the same service code and client calls must give the same results.

grpcio-status (rich errors), grpc-interceptor, sentry-sdk's server interceptor (passed
explicitly: its integration patches ``grpc.server``), betterproto messages, pytest-grpc's
fixtures and grpcio-testing. OpenTelemetry and Prometheus: test_observability.py.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Tuple

import grpc
import pytest

import puregrpc

from ._support import TIMEOUT

FLAVOURS: Dict[str, Callable[..., Any]] = {"grpcio": grpc.server, "puregrpc": puregrpc.server}


@contextlib.contextmanager
def serving(factory: Callable[..., Any], handlers: List[Any], interceptors: Tuple[Any, ...] = ()) -> Iterator[int]:
    pool = ThreadPoolExecutor(4)
    server = factory(pool, handlers=handlers, interceptors=list(interceptors))
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait(TIMEOUT)
        pool.shutdown(wait=False)


def both(run: Callable[[Callable[..., Any]], Any]) -> Any:
    """``run(factory)`` on each server; the results must be equal. Returns puregrpc's."""
    results = {name: run(factory) for name, factory in FLAVOURS.items()}
    assert results["puregrpc"] == results["grpcio"]
    return results["puregrpc"]


# --- grpcio-status ------------------------------------------------------------------------------


def test_grpcio_status_rich_errors() -> None:
    from google.protobuf import any_pb2
    from google.rpc import code_pb2, error_details_pb2, status_pb2
    from grpc_status import rpc_status

    def fail(request: bytes, context: Any) -> bytes:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason="QUOTA", domain="example.test", metadata={"k": "v"}))
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="over quota", details=[detail])
        context.abort_with_status(rpc_status.to_status(status))
        return b""

    handlers = [grpc.method_handlers_generic_handler("eco.S", {"Fail": grpc.unary_unary_rpc_method_handler(fail)})]

    def run(factory: Callable[..., Any]) -> Any:
        with serving(factory, handlers) as port, grpc.insecure_channel(f"localhost:{port}") as ch:
            with pytest.raises(grpc.RpcError) as info:
                ch.unary_unary("/eco.S/Fail")(b"", timeout=TIMEOUT)
            status = rpc_status.from_call(info.value)
            assert status is not None
            info_detail = error_details_pb2.ErrorInfo()
            assert status.details[0].Unpack(info_detail)
            return info.value.code(), info.value.details(), status.code, status.message, info_detail.reason

    assert both(run) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "over quota", 8, "over quota", "QUOTA")


# --- grpc-interceptor ---------------------------------------------------------------------------


def test_grpc_interceptor_package() -> None:
    from grpc_interceptor import ExceptionToStatusInterceptor, ServerInterceptor
    from grpc_interceptor.exceptions import NotFound

    class Tag(ServerInterceptor):  # type: ignore[misc]
        def intercept(self, method: Any, request: Any, context: Any, method_name: str) -> Any:
            context.set_trailing_metadata([("x-method", method_name)])
            return method(request, context)

    from google.protobuf.wrappers_pb2 import StringValue

    # grpc-interceptor expects protobuf messages (bytes would look like a stream to it).
    def find(request: Any, context: Any) -> Any:
        if request.value == "missing":
            raise NotFound("no such thing")
        return StringValue(value="found " + request.value)

    handler = grpc.unary_unary_rpc_method_handler(
        find, request_deserializer=StringValue.FromString, response_serializer=StringValue.SerializeToString
    )
    handlers = [grpc.method_handlers_generic_handler("eco.S", {"Find": handler})]

    def run(factory: Callable[..., Any]) -> Any:
        interceptors = (ExceptionToStatusInterceptor(), Tag())
        with serving(factory, handlers, interceptors) as port, grpc.insecure_channel(f"localhost:{port}") as ch:
            find_call = ch.unary_unary(
                "/eco.S/Find",
                request_serializer=StringValue.SerializeToString,
                response_deserializer=StringValue.FromString,
            )
            reply, call = find_call.with_call(StringValue(value="x"), timeout=TIMEOUT)
            trailing = dict(call.trailing_metadata())
            with pytest.raises(grpc.RpcError) as info:
                find_call(StringValue(value="missing"), timeout=TIMEOUT)
            return reply.value, trailing["x-method"], info.value.code(), info.value.details()

    assert both(run) == ("found x", "/eco.S/Find", grpc.StatusCode.NOT_FOUND, "no such thing")


# --- sentry-sdk ---------------------------------------------------------------------------------


def test_sentry_server_interceptor_passed_explicitly() -> None:
    sentry_sdk = pytest.importorskip("sentry_sdk")
    from sentry_sdk.integrations.grpc.server import ServerInterceptor
    from sentry_sdk.transport import Transport

    envelopes: List[Any] = []

    class Capture(Transport):  # type: ignore[misc]
        def capture_envelope(self, envelope: Any) -> None:
            envelopes.append(envelope)

    sentry_sdk.init(
        dsn="https://public@example.invalid/1",
        transport=Capture,
        traces_sample_rate=1.0,
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    handlers = [
        grpc.method_handlers_generic_handler(
            "eco.S", {"Hello": grpc.unary_unary_rpc_method_handler(lambda request, context: b"hi " + request)}
        )
    ]

    def run(factory: Callable[..., Any]) -> Any:
        envelopes.clear()
        with (
            serving(factory, handlers, (ServerInterceptor(),)) as port,
            grpc.insecure_channel(f"localhost:{port}") as ch,
        ):
            assert ch.unary_unary("/eco.S/Hello")(b"you", timeout=TIMEOUT) == b"hi you"
        sentry_sdk.flush()
        transactions = []
        for envelope in envelopes:
            for item in envelope.items:
                if item.type == "transaction":
                    event = item.payload.json
                    transactions.append((event["transaction"], event["contexts"]["trace"]["op"]))
        return transactions

    try:
        assert both(run) == [("/eco.S/Hello", "grpc.server")]
    finally:
        sentry_sdk.init(dsn=None)


# --- betterproto --------------------------------------------------------------------------------


def test_betterproto_messages() -> None:
    betterproto = pytest.importorskip("betterproto")

    @dataclass
    class Greeting(betterproto.Message):  # type: ignore[misc]
        name: str = betterproto.string_field(1)
        times: int = betterproto.int32_field(2)

    def greet(request: Any, context: Any) -> Any:
        return Greeting(name="hello " + request.name, times=request.times + 1)

    handler = grpc.unary_unary_rpc_method_handler(
        greet, request_deserializer=lambda data: Greeting().parse(data), response_serializer=bytes
    )
    handlers = [grpc.method_handlers_generic_handler("eco.B", {"Greet": handler})]

    def run(factory: Callable[..., Any]) -> Any:
        with serving(factory, handlers) as port, grpc.insecure_channel(f"localhost:{port}") as ch:
            call = ch.unary_unary(
                "/eco.B/Greet", request_serializer=bytes, response_deserializer=lambda data: Greeting().parse(data)
            )
            reply = call(Greeting(name="you", times=1), timeout=TIMEOUT)
            return reply.name, reply.times

    assert both(run) == ("hello you", 2)


# --- grpcio-testing -----------------------------------------------------------------------------


def test_grpcio_testing_and_a_real_puregrpc_server_agree(echo_pb: Any) -> None:
    """A servicer unit-tested with grpcio-testing's in-process fake behaves the same when
    puregrpc serves it to grpcio's client."""
    grpc_testing = pytest.importorskip("grpc_testing")
    pb, pb_grpc = echo_pb
    from echo_servicer import EchoServicer

    descriptor = pb.DESCRIPTOR.services_by_name["EchoService"]
    fake = grpc_testing.server_from_dictionary({descriptor: EchoServicer(pb)}, grpc_testing.strict_real_time())
    results = {}
    for status in (0, 5):
        request = pb.EchoRequest(message="m", status=status, details="d" if status else "")
        rpc = fake.invoke_unary_unary(descriptor.methods_by_name["Unary"], (), request, None)
        response, _, code, details = rpc.termination()
        results[status] = (response.message if response else None, code, details)

    pool = ThreadPoolExecutor(2)
    server = puregrpc.server(pool)
    pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        with grpc.insecure_channel(f"localhost:{port}") as ch:
            stub = pb_grpc.EchoServiceStub(ch)
            assert stub.Unary(pb.EchoRequest(message="m"), timeout=TIMEOUT).message == results[0][0]
            assert results[0][1].value == grpc.StatusCode.OK.value
            with pytest.raises(grpc.RpcError) as info:
                stub.Unary(pb.EchoRequest(message="m", status=5, details="d"), timeout=TIMEOUT)
            assert (info.value.code().value, info.value.details()) == (results[5][1].value, results[5][2])
    finally:
        server.stop(0)
        pool.shutdown(wait=False)
