"""Metadata (initial, trailing, binary), status codes, abort and the context's accessors."""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Dict, List

import grpc
import pytest

from ._support import TIMEOUT, LoopEvent, error_of, generic, method

CODES = [code for code in grpc.StatusCode if code is not grpc.StatusCode.OK]
BINARY = bytes(range(256))


def _md(pairs: Any) -> Dict[str, Any]:
    return {item[0]: item[1] for item in pairs or ()}


def test_initial_and_trailing_metadata_with_binary_values(served: Any) -> None:
    seen: List[Any] = []

    async def handler(request: bytes, context: Any) -> bytes:
        seen.append(context.invocation_metadata())
        await context.send_initial_metadata((("x-initial", "one"), ("x-initial-bin", BINARY)))
        context.set_trailing_metadata((("x-trailing", "two"), ("x-trailing-bin", b"\x00\xff\x00")))
        return b"body"

    with served(generic({"Md": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        response, call = ch.unary_unary(method("Md")).with_call(
            b"", metadata=(("x-client", "c"), ("x-client-bin", b"\x01\x02")), timeout=TIMEOUT
        )
        assert response == b"body"
        initial = _md(call.initial_metadata())
        assert (initial["x-initial"], initial["x-initial-bin"]) == ("one", BINARY)
        trailing = _md(call.trailing_metadata())
        assert (trailing["x-trailing"], trailing["x-trailing-bin"]) == ("two", b"\x00\xff\x00")
    invocation = _md(seen[0])
    assert (invocation["x-client"], invocation["x-client-bin"]) == ("c", b"\x01\x02")
    assert "user-agent" in invocation
    for key in invocation:
        assert not key.startswith(":"), "pseudo-headers are not metadata"


def test_stream_initial_metadata_arrives_before_the_first_message(served: Any) -> None:
    release = LoopEvent()
    loop_box: List[Any] = []

    async def handler(request: bytes, context: Any) -> AsyncIterator[bytes]:
        loop_box.append(asyncio.get_running_loop())
        await context.send_initial_metadata((("x-early", "yes"),))
        await asyncio.wait_for(release.wait(), TIMEOUT)
        yield b"late"

    with served(generic({"Early": grpc.unary_stream_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        responses = ch.unary_stream(method("Early"))(b"", timeout=TIMEOUT)
        assert _md(responses.initial_metadata())["x-early"] == "yes"
        s.loop.loop.call_soon_threadsafe(release.set)
        assert list(responses) == [b"late"]


def test_trailing_metadata_on_error_and_on_stream(served: Any) -> None:
    async def fail(request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("x-why-bin", b"\xde\xad"),))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "nope")

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"1"
        context.set_trailing_metadata((("x-done", "yes"),))

    handlers = generic(
        {"Fail": grpc.unary_unary_rpc_method_handler(fail), "Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    with served(handlers) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("Fail"))(b"", timeout=TIMEOUT))
        assert (err.code(), err.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "nope")
        assert _md(err.trailing_metadata())["x-why-bin"] == b"\xde\xad"
        call = ch.unary_stream(method("Stream"))(b"", timeout=TIMEOUT)
        assert list(call) == [b"1"]
        assert _md(call.trailing_metadata())["x-done"] == "yes"


@pytest.mark.parametrize("code", CODES, ids=[c.name for c in CODES])
def test_abort_with_every_status_code(served: Any, code: grpc.StatusCode) -> None:
    after: List[str] = []

    async def handler(request: bytes, context: Any) -> bytes:
        await context.abort(code, f"details of {code.name} ✓", (("x-aborted", code.name),))
        after.append("ran on")  # abort raises: never reached
        return b"unreachable"

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"before"
        await context.abort(code, "stream " + code.name)
        after.append("ran on")
        yield b"unreachable"

    handlers = generic(
        {"Abort": grpc.unary_unary_rpc_method_handler(handler), "Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    with served(handlers) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("Abort"))(b"", timeout=TIMEOUT))
        assert err.code() == code
        assert err.details() == f"details of {code.name} ✓"
        assert _md(err.trailing_metadata())["x-aborted"] == code.name
        got: List[bytes] = []

        def drain() -> None:
            for item in ch.unary_stream(method("Stream"))(b"", timeout=TIMEOUT):
                got.append(item)

        err = error_of(drain)
        assert (err.code(), err.details(), got) == (code, "stream " + code.name, [b"before"])
    assert after == []


def test_abort_raises_an_exception_the_handler_can_see(served: Any) -> None:
    caught: List[BaseException] = []

    async def handler(request: bytes, context: Any) -> bytes:
        try:
            await context.abort(grpc.StatusCode.INTERNAL, "inner")
        except BaseException as exc:
            caught.append(exc)
            raise
        return b""

    with served(generic({"A": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("A"))(b"", timeout=TIMEOUT))
        assert (err.code(), err.details()) == (grpc.StatusCode.INTERNAL, "inner")
    assert len(caught) == 1
    assert isinstance(caught[0], Exception), "abort's exception is an Exception, as grpc.aio's AbortError is"


@pytest.mark.grpcaio_wrong("abort(StatusCode.OK) never ends the RPC: the client waits for its deadline")
def test_abort_with_ok_becomes_unknown(served: Any) -> None:
    async def handler(request: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.OK, "not ok")
        return b""

    with served(generic({"A": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("A"))(b"", timeout=3.0))
        assert err.code() == grpc.StatusCode.UNKNOWN


def test_abort_with_status(served: Any) -> None:
    class Status(grpc.Status):
        code = grpc.StatusCode.DATA_LOSS
        details = "lost"
        trailing_metadata = (("x-status", "s"), ("x-status-bin", b"\x07"))

    async def handler(request: bytes, context: Any) -> bytes:
        await context.abort_with_status(Status())
        return b"unreachable"

    with served(generic({"S": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("S"))(b"", timeout=TIMEOUT))
        assert (err.code(), err.details()) == (grpc.StatusCode.DATA_LOSS, "lost")
        md = _md(err.trailing_metadata())
        assert (md["x-status"], md["x-status-bin"]) == ("s", b"\x07")


def test_rich_status_details_round_trip(served: Any) -> None:
    """grpcio-status: the grpc-status-details-bin trailer that abort_with_status sends."""
    rpc_status = pytest.importorskip("grpc_status.rpc_status")
    from google.rpc import code_pb2, status_pb2

    async def handler(request: bytes, context: Any) -> bytes:
        detail = status_pb2.Status(code=code_pb2.NOT_FOUND, message="rich")
        await context.abort_with_status(rpc_status.to_status(detail))
        return b""

    with served(generic({"R": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("R"))(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        status = rpc_status.from_call(err)
        assert (status.code, status.message) == (code_pb2.NOT_FOUND, "rich")


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OK], ids=["NOT_FOUND", "OK"])
def test_set_code_and_details_without_abort(served: Any, code: grpc.StatusCode) -> None:
    seen: List[Any] = []

    async def handler(request: bytes, context: Any) -> bytes:
        seen.append((context.code(), context.details()))
        context.set_code(code)
        context.set_details("set by the handler")
        seen.append((context.code(), context.details()))
        return b"response"

    with served(generic({"S": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        call = ch.unary_unary(method("S"))
        if code is grpc.StatusCode.OK:
            response, outcome = call.with_call(b"", timeout=TIMEOUT)
            assert response == b"response"
            assert outcome.code() == grpc.StatusCode.OK
        else:
            err = error_of(lambda: call(b"", timeout=TIMEOUT))
            assert (err.code(), err.details()) == (code, "set by the handler")
    assert seen[0][0] is None
    assert not seen[0][1]  # '' (grpc.aio) or None
    assert seen[1] == (code, "set by the handler")


def test_trailing_metadata_accessor(served: Any) -> None:
    seen: List[Any] = []

    async def handler(request: bytes, context: Any) -> bytes:
        seen.append(tuple(context.trailing_metadata() or ()))
        context.set_trailing_metadata((("x-a", "1"),))
        seen.append(tuple(tuple(item) for item in context.trailing_metadata()))
        return b""

    with served(generic({"T": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        ch.unary_unary(method("T"))(b"", timeout=TIMEOUT)
    assert seen == [(), (("x-a", "1"),)]


def test_handler_exception_details(served: Any) -> None:
    async def handler(request: bytes, context: Any) -> bytes:
        raise ValueError("the cause")

    with served(generic({"E": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("E"))(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.UNKNOWN
        assert err.details() == "Unexpected <class 'ValueError'>: the cause"


def test_peer_auth_context_and_time_remaining(served: Any) -> None:
    seen: Dict[str, Any] = {}

    async def handler(request: bytes, context: Any) -> bytes:
        seen.setdefault("peer", []).append(context.peer())
        seen["identities"] = context.peer_identities()
        seen["identity_key"] = context.peer_identity_key()
        seen["auth"] = context.auth_context()
        seen.setdefault("remaining", []).append(context.time_remaining())
        return b""

    with served(generic({"P": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        ch.unary_unary(method("P"))(b"", timeout=5.0)
        ch.unary_unary(method("P"))(b"")
    assert seen["peer"][0].startswith("ipv4:127.0.0.1:")
    assert int(seen["peer"][0].rsplit(":", 1)[1]) != s.port
    assert seen["identities"] is None
    assert seen["identity_key"] is None
    assert seen["auth"]["transport_security_type"] == [b"insecure"]
    with_deadline, without = seen["remaining"]
    # 5 s deadline: grpc.aio reports up to ~10 ms over it (the client rounds the timeout up)
    assert 3.0 < with_deadline <= 5.05
    assert without is None or without > 1e6
