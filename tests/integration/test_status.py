"""Status codes and details the client sees, as grpcio's server sends them."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List

import grpc
import pytest

from ._support import TIMEOUT, Running, serve

SERVICE = "status.Probe"
UNICODE = "héllo ✓ 100%\n"


class Boom(Exception):
    pass


def _raise(request: bytes, context: Any) -> bytes:
    raise Boom("boom")


def _set_code_then_raise(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
    raise Boom("out of widgets")


def _set_code_details_then_raise(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.DATA_LOSS)
    context.set_details("lost it")
    raise Boom("hidden")


def _stream_then_raise(request: bytes, context: Any) -> Iterator[bytes]:
    yield b"1"
    yield b"2"
    raise Boom("mid-stream")


def _client_stream_raise(requests: Iterator[bytes], context: Any) -> bytes:
    for index, _ in enumerate(requests):
        if index == 2:
            raise Boom("third request")
    return b""


def _abort_unicode(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNICODE)
    return b""


def _set_details_unicode(request: bytes, context: Any) -> bytes:
    context.set_code(grpc.StatusCode.ABORTED)
    context.set_details(request.decode("utf-8"))
    return b""


def _ok_with_details(request: bytes, context: Any) -> bytes:
    context.set_details("fine ✓")
    return b"ok"


def _bad_response(request: bytes, context: Any) -> object:
    return object()  # not bytes and no serializer can fix that


def _failing_deserializer(data: bytes) -> bytes:
    raise ValueError("cannot parse")


def _unreachable(request: bytes, context: Any) -> bytes:
    raise AssertionError("the handler must not run")


def _failing_serializer(response: Any) -> bytes:
    raise ValueError("cannot serialize")


def _stream_then_abort(request: bytes, context: Any) -> Iterator[bytes]:
    yield b"1"
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "stop here")


def _bidi_abort(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for request in requests:
        if request == b"stop":
            context.abort(grpc.StatusCode.CANCELLED, "client said stop")
        yield request


def _serialize_echo_response(response: Any) -> bytes:
    return bytes(response.SerializeToString())  # AttributeError on None


def _handlers() -> Dict[str, Any]:
    uu = grpc.unary_unary_rpc_method_handler
    return {
        "Raise": uu(_raise),
        "SetCodeThenRaise": uu(_set_code_then_raise),
        "SetCodeDetailsThenRaise": uu(_set_code_details_then_raise),
        "StreamThenRaise": grpc.unary_stream_rpc_method_handler(_stream_then_raise),
        "ClientStreamRaise": grpc.stream_unary_rpc_method_handler(_client_stream_raise),
        "AbortUnicode": uu(_abort_unicode),
        "SetDetailsUnicode": uu(_set_details_unicode),
        "OkWithDetails": uu(_ok_with_details),
        "BadResponse": uu(_bad_response),
        "BadRequest": uu(_unreachable, request_deserializer=_failing_deserializer),
        "BadSerializer": uu(lambda r, c: b"x", response_serializer=_failing_serializer),
        "ReturnsNone": uu(lambda r, c: None, response_serializer=_serialize_echo_response),
        "StreamThenAbort": grpc.unary_stream_rpc_method_handler(_stream_then_abort),
        "BidiAbort": grpc.stream_stream_rpc_method_handler(_bidi_abort),
    }


@pytest.fixture(scope="module")
def server(echo_server: Running) -> Iterator[Running]:
    generic = grpc.method_handlers_generic_handler(SERVICE, _handlers())
    with serve(handlers=[generic]) as running:
        yield running


@pytest.fixture()
def ch(server: Running) -> Iterator[grpc.Channel]:
    channel = server.channel()
    yield channel
    channel.close()


def fail(ch: grpc.Channel, name: str, request: bytes = b"") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        ch.unary_unary(f"/{SERVICE}/{name}")(request, timeout=TIMEOUT)
    return info.value


def test_handler_exception_is_unknown(ch: grpc.Channel) -> None:
    error = fail(ch, "Raise")
    assert error.code() is grpc.StatusCode.UNKNOWN
    assert error.details() == "Exception calling application: boom"


def test_set_code_then_raise_keeps_the_code(ch: grpc.Channel) -> None:
    error = fail(ch, "SetCodeThenRaise")
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == "Exception calling application: out of widgets"
    error = fail(ch, "SetCodeDetailsThenRaise")
    assert error.code() is grpc.StatusCode.DATA_LOSS
    assert error.details() == "lost it"


def test_exception_mid_stream(ch: grpc.Channel) -> None:
    call = ch.unary_stream(f"/{SERVICE}/StreamThenRaise")(b"", timeout=TIMEOUT)
    received: List[bytes] = []
    with pytest.raises(grpc.RpcError):
        for item in call:
            received.append(item)
    assert received == [b"1", b"2"]
    assert call.code() is grpc.StatusCode.UNKNOWN
    assert call.details() == "Exception iterating responses: mid-stream"  # grpcio's wording


def test_exception_in_client_streaming_handler(ch: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        ch.stream_unary(f"/{SERVICE}/ClientStreamRaise")(iter([b"a"] * 5), timeout=TIMEOUT)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert info.value.details() == "Exception calling application: third request"


def test_unicode_details_round_trip(ch: grpc.Channel) -> None:
    error = fail(ch, "AbortUnicode")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == UNICODE
    for text in (
        "100% sure",
        "tab\tand\r\nnewlines",
        "日本語",
        "emoji 🎉",
        "%41 stays",
        "~!@#$^&*()",
    ):
        error = fail(ch, "SetDetailsUnicode", text.encode("utf-8"))
        assert error.code() is grpc.StatusCode.ABORTED
        assert error.details() == text


def test_ok_with_details(ch: grpc.Channel) -> None:
    body, call = ch.unary_unary(f"/{SERVICE}/OkWithDetails").with_call(b"", timeout=TIMEOUT)
    assert body == b"ok"
    assert call.code() is grpc.StatusCode.OK
    # grpcio's client reports no details with OK (as with grpcio's server).
    assert call.details() in ("", None)


def test_deserialization_failure_is_internal(ch: grpc.Channel) -> None:
    error = fail(ch, "BadRequest")
    assert error.code() is grpc.StatusCode.INTERNAL
    assert error.details() == "Exception deserializing request!"


def test_protobuf_deserialization_failure(echo_server: Running) -> None:
    with echo_server.channel() as ch:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/puregrpc.test.EchoService/Unary")(b"\xff\xff\xff", timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.INTERNAL
        assert info.value.details() == "Exception deserializing request!"
        with pytest.raises(grpc.RpcError) as info:
            ch.stream_unary("/puregrpc.test.EchoService/ClientStream")(iter([b"", b"\xff\xff\xff"]), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.INTERNAL
        assert info.value.details() == "Exception deserializing request!"


def test_serialization_failure_is_internal(ch: grpc.Channel) -> None:
    for name in ("BadSerializer", "BadResponse", "ReturnsNone"):
        error = fail(ch, name)
        assert error.code() is grpc.StatusCode.INTERNAL
        assert error.details() == "Failed to serialize response!"


def test_unknown_method_and_service(ch: grpc.Channel) -> None:
    error = fail(ch, "NoSuchMethod")
    assert error.code() is grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == "Method not found!"
    call = ch.stream_stream("/no.Such/Service")(iter([b"x", b"y"]), timeout=TIMEOUT)
    with pytest.raises(grpc.RpcError):
        list(call)
    assert call.code() is grpc.StatusCode.UNIMPLEMENTED
    assert call.details() == "Method not found!"


def test_every_status_code_round_trips(echo_server: Running, pb: Any, pb_grpc: Any) -> None:
    with echo_server.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        for code in grpc.StatusCode:
            if code is grpc.StatusCode.OK:
                continue
            with pytest.raises(grpc.RpcError) as info:
                stub.Unary(
                    pb.EchoRequest(status=code.value[0], details=f"code {code.name}"),
                    timeout=TIMEOUT,
                )
            assert info.value.code() is code
            assert info.value.details() == f"code {code.name}"


def test_abort_in_streaming_handlers(ch: grpc.Channel) -> None:
    call = ch.unary_stream(f"/{SERVICE}/StreamThenAbort")(b"", timeout=TIMEOUT)
    received: List[bytes] = []
    with pytest.raises(grpc.RpcError):
        for item in call:
            received.append(item)
    assert received == [b"1"]
    assert call.code() is grpc.StatusCode.PERMISSION_DENIED
    assert call.details() == "stop here"
    call = ch.stream_stream(f"/{SERVICE}/BidiAbort")(iter([b"a", b"b", b"stop", b"c"]), timeout=TIMEOUT)
    received = []
    with pytest.raises(grpc.RpcError):
        for item in call:
            received.append(item)
    assert received == [b"a", b"b"]
    assert call.code() is grpc.StatusCode.CANCELLED
    assert call.details() == "client said stop"
