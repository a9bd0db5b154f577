"""Every ``ServicerContext`` method, seen through grpcio's client."""

from __future__ import annotations

import collections
import re
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import grpc
import pytest

import puregrpc

from ._support import TIMEOUT, Recorder, Running, serve, wait_for

SERVICE = "ctx.Probe"


class Status(
    collections.namedtuple("Status", ("code", "details", "trailing_metadata")),
    grpc.Status,
):
    """A ``grpc.Status`` as grpcio-status' ``rpc_status.to_status`` builds it."""


class Probe:
    """Raw-bytes handlers; what they observe goes to ``self.seen``."""

    def __init__(self) -> None:
        self.seen: Dict[str, Any] = {}
        self.events = Recorder()
        self.release = threading.Event()

    def handlers(self) -> Dict[str, Any]:
        uu = grpc.unary_unary_rpc_method_handler
        us = grpc.unary_stream_rpc_method_handler
        return {
            "Metadata": uu(self.metadata),
            "Peer": uu(self.peer),
            "Security": uu(self.security),
            "InitialMetadata": uu(self.initial_metadata),
            "InitialMetadataLate": us(self.initial_metadata_late),
            "Trailing": uu(self.trailing),
            "Abort": uu(self.abort),
            "AbortOk": uu(self.abort_ok),
            "AbortWithStatus": uu(self.abort_with_status),
            "SetCode": uu(self.set_code),
            "SetCodeStream": us(self.set_code_stream),
            "Time": uu(self.time),
            "Cancel": uu(self.cancel),
            "CancelStream": us(self.cancel_stream),
            "Callback": uu(self.callback),
            "WaitForever": uu(self.wait_forever),
            "StreamForever": us(self.stream_forever),
            "BidiForever": grpc.stream_stream_rpc_method_handler(self.bidi_forever),
        }

    def metadata(self, request: bytes, context: Any) -> bytes:
        self.seen["metadata"] = tuple(context.invocation_metadata())
        return b""

    def peer(self, request: bytes, context: Any) -> bytes:
        return context.peer().encode()

    def security(self, request: bytes, context: Any) -> bytes:
        self.seen["security"] = (
            context.peer_identities(),
            context.peer_identity_key(),
            context.auth_context(),
        )
        return b""

    def initial_metadata(self, request: bytes, context: Any) -> bytes:
        context.send_initial_metadata((("first", "1"), ("blob-bin", b"\x00\x01\xfe")))
        try:
            context.send_initial_metadata((("second", "2"),))
        except ValueError as exc:
            self.seen["second"] = exc
        return b"body"

    def initial_metadata_late(self, request: bytes, context: Any) -> Iterator[bytes]:
        yield b"one"
        try:
            context.send_initial_metadata((("late", "1"),))
        except ValueError as exc:
            self.seen["late"] = exc
        yield b"two"

    def trailing(self, request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("t1", "a"), ("t2-bin", b"\xff\x00"), ("t1", "b")))
        self.seen["trailing"] = tuple(context.trailing_metadata())
        return b"ok"

    def abort(self, request: bytes, context: Any) -> bytes:
        context.set_trailing_metadata((("why", "because"),))
        try:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "precondition ✗")
        except Exception:
            self.seen["abort_raised"] = True
            raise
        self.seen["after_abort"] = True  # never reached
        return b""

    def abort_ok(self, request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.OK, "not an error")
        return b""

    def abort_with_status(self, request: bytes, context: Any) -> bytes:
        trailing = (("grpc-status-details-bin", b"\x08\x05\x12\x03abc"), ("extra", "x"))
        context.abort_with_status(Status(grpc.StatusCode.NOT_FOUND, "gone", trailing))
        return b""

    def set_code(self, request: bytes, context: Any) -> bytes:
        self.seen["code_before"] = (context.code(), context.details())
        context.set_code(grpc.StatusCode.INVALID_ARGUMENT)
        context.set_details("bad argument")
        self.seen["code_after"] = (context.code(), context.details())
        return b"ignored"

    def set_code_stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        yield b"a"
        yield b"b"
        context.set_code(puregrpc.StatusCode.OUT_OF_RANGE)
        context.set_details("enough")

    def time(self, request: bytes, context: Any) -> bytes:
        return repr(context.time_remaining()).encode()

    def cancel(self, request: bytes, context: Any) -> bytes:
        context.add_callback(lambda: self.events.add("cancel-callback"))
        context.cancel()
        self.seen["active_after_cancel"] = context.is_active()
        return b"too late"

    def cancel_stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        yield b"first"
        context.cancel()
        self.seen["stream_active_after_cancel"] = context.is_active()
        yield b"never"

    def callback(self, request: bytes, context: Any) -> bytes:
        assert context.add_callback(lambda: self.events.add("normal-end")) is True
        self.seen["active_during"] = context.is_active()
        self.seen["context"] = context
        return b"done"

    def wait_forever(self, request: bytes, context: Any) -> bytes:
        """Waits until inactive (client cancel or deadline); records what it saw."""
        name = request.decode()
        context.add_callback(lambda: self.events.add(f"{name}-callback"))
        self.events.add(f"{name}-started")
        wait_for(lambda: not context.is_active(), TIMEOUT)
        self.events.add(f"{name}-inactive")
        return b""

    def stream_forever(self, request: bytes, context: Any) -> Iterator[bytes]:
        name = request.decode()
        context.add_callback(lambda: self.events.add(f"{name}-callback"))
        sent = 0
        while context.is_active() and sent < 10_000:
            yield b"tick"
            sent += 1
            time.sleep(0.005)
        self.events.add(f"{name}-inactive")

    def bidi_forever(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        yield from self.stream_forever(next(requests), context)


@pytest.fixture(scope="module")
def probe() -> Probe:
    return Probe()


@pytest.fixture(scope="module")
def server(probe: Probe) -> Iterator[Running]:
    generic = grpc.method_handlers_generic_handler(SERVICE, probe.handlers())
    with serve(handlers=[generic]) as running:
        yield running


@pytest.fixture()
def ch(server: Running) -> Iterator[grpc.Channel]:
    channel = server.channel()
    yield channel
    channel.close()


def method(ch: grpc.Channel, name: str) -> Callable[..., Any]:
    return ch.unary_unary(f"/{SERVICE}/{name}")


def test_invocation_metadata(ch: grpc.Channel, probe: Probe) -> None:
    sent = (
        ("k", "v1"),
        ("data-bin", b"\x00\xff\x10"),
        ("k", "v2"),
        ("other", "x"),
        ("k", "v3"),
        ("data-bin", b""),
    )
    method(ch, "Metadata")(b"", metadata=sent, timeout=TIMEOUT)
    seen = probe.seen["metadata"]
    assert [v for k, v in seen if k == "k"] == ["v1", "v2", "v3"]
    assert [v for k, v in seen if k == "data-bin"] == [b"\x00\xff\x10", b""]
    assert ("other", "x") in seen
    assert all(isinstance(k, str) for k, _ in seen)
    assert any(k == "user-agent" and "grpc-python" in v for k, v in seen)
    # Transport headers are not metadata.
    keys = {k for k, _ in seen}
    assert not keys & {"te", "content-type", "grpc-timeout", ":path", ":authority"}


def test_peer_ipv4_and_ipv6(server: Running) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch4:
        peer = method(ch4, "Peer")(b"", timeout=TIMEOUT).decode()
    assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", peer), peer
    assert int(peer.rsplit(":", 1)[1]) != server.port
    with grpc.insecure_channel(f"[::1]:{server.port}") as ch6:
        peer = method(ch6, "Peer")(b"", timeout=TIMEOUT).decode()
    # grpcio writes "ipv6:%5B::1%5D:port" (brackets percent-encoded); older cores "[::1]".
    assert re.fullmatch(r"ipv6:(\[|%5B)::1(\]|%5D):\d+", peer), peer


def test_security_on_plaintext(ch: grpc.Channel, probe: Probe) -> None:
    method(ch, "Security")(b"", timeout=TIMEOUT)
    identities, key, auth = probe.seen["security"]
    assert identities is None
    assert key is None
    # As grpcio's server on an insecure port.
    assert auth == {
        "transport_security_type": [b"insecure"],
        "security_level": [b"TSI_SECURITY_NONE"],
    }


def test_send_initial_metadata(ch: grpc.Channel, probe: Probe) -> None:
    body, call = method(ch, "InitialMetadata").with_call(b"", timeout=TIMEOUT)
    assert body == b"body"
    initial = tuple(call.initial_metadata())
    assert ("first", "1") in initial
    assert ("blob-bin", b"\x00\x01\xfe") in initial
    assert not any(k == "second" for k, _ in initial)
    assert isinstance(probe.seen["second"], ValueError)


def test_send_initial_metadata_after_first_response(ch: grpc.Channel, probe: Probe) -> None:
    call = ch.unary_stream(f"/{SERVICE}/InitialMetadataLate")(b"", timeout=TIMEOUT)
    assert list(call) == [b"one", b"two"]
    assert call.code() is grpc.StatusCode.OK
    assert not any(k == "late" for k, _ in call.initial_metadata())
    assert isinstance(probe.seen["late"], ValueError)


def test_trailing_metadata(ch: grpc.Channel, probe: Probe) -> None:
    body, call = method(ch, "Trailing").with_call(b"", timeout=TIMEOUT)
    assert body == b"ok"
    trailing = tuple(call.trailing_metadata())
    assert [v for k, v in trailing if k == "t1"] == ["a", "b"]
    assert ("t2-bin", b"\xff\x00") in trailing
    assert probe.seen["trailing"] == (("t1", "a"), ("t2-bin", b"\xff\x00"), ("t1", "b"))


def test_abort(ch: grpc.Channel, probe: Probe) -> None:
    with pytest.raises(grpc.RpcError) as info:
        method(ch, "Abort")(b"", timeout=TIMEOUT)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details() == "precondition ✗"
    assert ("why", "because") in tuple(info.value.trailing_metadata())
    assert probe.seen.get("abort_raised") is True
    assert "after_abort" not in probe.seen


def test_abort_with_ok_becomes_unknown(ch: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        method(ch, "AbortOk")(b"", timeout=TIMEOUT)
    assert info.value.code() is grpc.StatusCode.UNKNOWN
    assert info.value.details() in ("", None)  # grpcio drops the details too


def test_abort_with_status_and_status_details(ch: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as info:
        method(ch, "AbortWithStatus")(b"", timeout=TIMEOUT)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert info.value.details() == "gone"
    trailing = tuple(info.value.trailing_metadata())
    assert ("extra", "x") in trailing
    # grpcio-status' rpc_status.from_call reads this key from the trailing metadata.
    assert ("grpc-status-details-bin", b"\x08\x05\x12\x03abc") in trailing


def test_set_code_and_details(ch: grpc.Channel, probe: Probe) -> None:
    with pytest.raises(grpc.RpcError) as info:
        method(ch, "SetCode")(b"", timeout=TIMEOUT)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "bad argument"
    assert probe.seen["code_before"] == (None, None)
    code, details = probe.seen["code_after"]
    assert code.value == grpc.StatusCode.INVALID_ARGUMENT.value
    assert details == "bad argument"


def test_set_code_at_end_of_stream(ch: grpc.Channel) -> None:
    call = ch.unary_stream(f"/{SERVICE}/SetCodeStream")(b"", timeout=TIMEOUT)
    received: List[bytes] = []
    with pytest.raises(grpc.RpcError):
        for item in call:
            received.append(item)
    assert received == [b"a", b"b"]
    assert call.code() is grpc.StatusCode.OUT_OF_RANGE
    assert call.details() == "enough"


def test_time_remaining(ch: grpc.Channel) -> None:
    remaining = float(method(ch, "Time")(b"", timeout=5.0))
    # grpc-core rounds the grpc-timeout it sends up (e.g. "5010m"), so a little over 5 s can arrive.
    assert 3.0 < remaining <= 5.1
    # No deadline: None, as grpc.ServicerContext documents.
    assert method(ch, "Time")(b"", timeout=None) == b"None"


def test_cancel_unary(ch: grpc.Channel, probe: Probe) -> None:
    with pytest.raises(grpc.RpcError) as info:
        method(ch, "Cancel")(b"", timeout=TIMEOUT)
    assert info.value.code() is grpc.StatusCode.CANCELLED
    # The client may see CANCELLED before the handler has gone on.
    assert wait_for(lambda: "active_after_cancel" in probe.seen)
    assert probe.seen["active_after_cancel"] is False
    assert probe.events.wait_for("cancel-callback")


def test_cancel_stream(ch: grpc.Channel, probe: Probe) -> None:
    call = ch.unary_stream(f"/{SERVICE}/CancelStream")(b"", timeout=TIMEOUT)
    received: List[bytes] = []
    with pytest.raises(grpc.RpcError):
        for item in call:
            received.append(item)
    assert call.code() is grpc.StatusCode.CANCELLED
    assert b"never" not in received
    assert wait_for(lambda: "stream_active_after_cancel" in probe.seen)
    assert probe.seen["stream_active_after_cancel"] is False


def test_callback_on_normal_end(ch: grpc.Channel, probe: Probe) -> None:
    assert method(ch, "Callback")(b"", timeout=TIMEOUT) == b"done"
    assert probe.events.wait_for("normal-end")
    assert probe.seen["active_during"] is True
    context = probe.seen["context"]
    assert wait_for(lambda: not context.is_active())
    # Too late to register once the RPC has terminated.
    assert context.add_callback(lambda: None) is False


def test_callback_on_client_cancel(ch: grpc.Channel, probe: Probe) -> None:
    future = method(ch, "WaitForever").future(b"cancelled", timeout=TIMEOUT)
    assert probe.events.wait_for("cancelled-started")
    assert future.cancel()
    assert probe.events.wait_for("cancelled-inactive")
    assert probe.events.wait_for("cancelled-callback")


def test_callback_on_deadline(ch: grpc.Channel, probe: Probe) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        method(ch, "WaitForever")(b"deadline", timeout=0.3)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert probe.events.wait_for("deadline-inactive")
    assert probe.events.wait_for("deadline-callback")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["server-stream", "bidi"])
def test_client_cancels_stream_midway(ch: grpc.Channel, probe: Probe, kind: str) -> None:
    name = f"mid-{kind}"
    if kind == "server-stream":
        call = ch.unary_stream(f"/{SERVICE}/StreamForever")(name.encode(), timeout=TIMEOUT)
    else:
        stop_sending = threading.Event()

        def requests() -> Iterator[bytes]:
            yield name.encode()
            stop_sending.wait(TIMEOUT)  # the request stream stays open

        call = ch.stream_stream(f"/{SERVICE}/BidiForever")(requests(), timeout=TIMEOUT)
    for _ in range(3):
        assert next(call) == b"tick"
    call.cancel()
    assert probe.events.wait_for(f"{name}-inactive")
    assert probe.events.wait_for(f"{name}-callback")
    assert call.code() is grpc.StatusCode.CANCELLED
    if kind == "bidi":
        stop_sending.set()
