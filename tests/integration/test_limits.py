"""maximum_concurrent_rpcs, deadlines, and message size limits."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, Iterator, List

import grpc
import pytest

from ._support import TIMEOUT, Recorder, serve

SERVICE = "limits.Probe"
MiB = 1024 * 1024


def echo(request: bytes, context: Any) -> bytes:
    return request


def sized(request: bytes, context: Any) -> bytes:
    return b"z" * int(request.decode())


def echo_handlers(extra: Dict[str, Any]) -> List[Any]:
    methods = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Sized": grpc.unary_unary_rpc_method_handler(sized),
        "Count": grpc.stream_unary_rpc_method_handler(
            lambda requests, context: str(sum(len(r) for r in requests)).encode()
        ),
        "Repeat": grpc.unary_stream_rpc_method_handler(
            lambda request, context: (b"r" * int(request.decode()) for _ in range(3))
        ),
        "BidiEcho": grpc.stream_stream_rpc_method_handler(lambda requests, context: requests),
    }
    methods.update(extra)
    return [grpc.method_handlers_generic_handler(SERVICE, methods)]


# --- maximum_concurrent_rpcs ----------------------------------------------------


def test_maximum_concurrent_rpcs() -> None:
    release = threading.Event()
    entered = Recorder()

    def block(request: bytes, context: Any) -> bytes:
        entered.add(request)
        release.wait(TIMEOUT)
        return request

    handlers = echo_handlers({"Block": grpc.unary_unary_rpc_method_handler(block)})
    with serve(handlers=handlers, maximum_concurrent_rpcs=2) as running, running.channel() as ch:
        blocking = ch.unary_unary(f"/{SERVICE}/Block")
        first = blocking.future(b"1", timeout=TIMEOUT)
        second = blocking.future(b"2", timeout=TIMEOUT)
        assert entered.wait_for(b"1") and entered.wait_for(b"2")
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:
                ch.unary_unary(f"/{SERVICE}/Echo")(b"3", timeout=TIMEOUT)
            assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details() == "Concurrent RPC limit exceeded!"
        # Streaming RPCs count and are refused the same way.
        call = ch.stream_stream(f"/{SERVICE}/BidiEcho")(iter([b"x"]), timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError):
            list(call)
        assert call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert first.result(timeout=TIMEOUT) == b"1"
        assert second.result(timeout=TIMEOUT) == b"2"
        # Finished RPCs free their slots (also those that were refused or failed).
        for _ in range(5):
            assert ch.unary_unary(f"/{SERVICE}/Echo")(b"again", timeout=TIMEOUT) == b"again"
        futures = [blocking.future(b"%d" % i, timeout=TIMEOUT) for i in range(2)]
        assert [f.result(timeout=TIMEOUT) for f in futures] == [b"0", b"1"]


# --- deadlines ----------------------------------------------------------------------


def test_deadline_server_streaming_and_client_streaming() -> None:
    events = Recorder()

    def slow_stream(request: bytes, context: Any) -> Iterator[bytes]:
        context.add_callback(lambda: events.add("stream-callback"))
        while context.is_active():
            yield b"tick"
            time.sleep(0.02)
        events.add("stream-inactive")

    def slow_reader(requests: Iterator[bytes], context: Any) -> bytes:
        context.add_callback(lambda: events.add("reader-callback"))
        try:
            for _ in requests:
                pass
        except Exception as exc:
            events.add(("reader-error", type(exc).__name__))
        events.add(("reader-active", context.is_active()))
        return b""

    handlers = echo_handlers(
        {
            "SlowStream": grpc.unary_stream_rpc_method_handler(slow_stream),
            "SlowReader": grpc.stream_unary_rpc_method_handler(slow_reader),
        }
    )
    with serve(handlers=handlers) as running, running.channel() as ch:
        started = time.monotonic()
        call = ch.unary_stream(f"/{SERVICE}/SlowStream")(b"", timeout=0.4)
        received = 0
        with pytest.raises(grpc.RpcError):
            for _ in call:
                received += 1
        assert call.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert received > 0
        assert events.wait_for("stream-inactive")
        assert events.wait_for("stream-callback")

        stop = threading.Event()

        def trickle() -> Iterator[bytes]:
            while not stop.is_set():
                yield b"t"
                time.sleep(0.02)

        with pytest.raises(grpc.RpcError) as info:
            ch.stream_unary(f"/{SERVICE}/SlowReader")(trickle(), timeout=0.4)
        stop.set()
        assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert events.wait_for(("reader-active", False))
        # Reading a request stream that has ended this way raises (grpcio: grpc.RpcError;
        # puregrpc: puregrpc.RpcError, as the README says).
        assert ("reader-error", "RpcError") in events
        assert events.wait_for("reader-callback")
        assert time.monotonic() - started < 5


# --- message size limits -----------------------------------------------------------


def test_default_receive_limit_is_4_mib() -> None:
    with serve(handlers=echo_handlers({})) as running, running.channel() as ch:
        at_limit = ch.stream_unary(f"/{SERVICE}/Count")
        assert at_limit(iter([b"a" * (4 * MiB)]), timeout=TIMEOUT) == str(4 * MiB).encode()
        with pytest.raises(grpc.RpcError) as info:
            at_limit(iter([b"a" * (4 * MiB + 1)]), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == f"Received message larger than max ({4 * MiB + 1} vs. {4 * MiB})"
        # A unary request over the limit, and the connection still works afterwards.
        echo_call = ch.unary_unary(f"/{SERVICE}/Echo")
        with pytest.raises(grpc.RpcError) as info:
            echo_call(b"b" * (5 * MiB), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert echo_call(b"small", timeout=TIMEOUT) == b"small"


def test_compressed_request_over_the_limit_once_inflated() -> None:
    with serve(handlers=echo_handlers({})) as running, running.channel() as ch:
        count = ch.stream_unary(f"/{SERVICE}/Count")
        with pytest.raises(grpc.RpcError) as info:
            count(iter([b"\0" * (5 * MiB)]), timeout=TIMEOUT, compression=grpc.Compression.Gzip)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details().startswith("Received message larger than max")
        small = count(iter([b"\0" * MiB]), timeout=TIMEOUT, compression=grpc.Compression.Gzip)
        assert small == str(MiB).encode()


def test_16_mib_messages_both_ways_with_raised_limits() -> None:
    limit = 20 * MiB
    options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
    big = bytes(range(256)) * (16 * MiB // 256)
    with (
        serve(handlers=echo_handlers({}), options=options) as running,
        running.channel(options=options) as ch,
    ):
        assert ch.unary_unary(f"/{SERVICE}/Echo")(big, timeout=TIMEOUT) == big
        bidi = ch.stream_stream(f"/{SERVICE}/BidiEcho")
        assert list(bidi(iter([big, b"x"]), timeout=TIMEOUT)) == [big, b"x"]


def test_send_limit() -> None:
    options = [("grpc.max_send_message_length", 1024)]
    with serve(handlers=echo_handlers({}), options=options) as running, running.channel() as ch:
        sized_call = ch.unary_unary(f"/{SERVICE}/Sized")
        assert sized_call(b"1024", timeout=TIMEOUT) == b"z" * 1024
        with pytest.raises(grpc.RpcError) as info:
            sized_call(b"1025", timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert info.value.details() == "Sent message larger than max (1025 vs. 1024)"
        call = ch.unary_stream(f"/{SERVICE}/Repeat")(b"2000", timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError):
            list(call)
        assert call.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        # The send limit does not limit what the server receives.
        count = ch.stream_unary(f"/{SERVICE}/Count")
        assert count(iter([b"e" * 4096]), timeout=TIMEOUT) == b"4096"


def test_unlimited_receive_with_minus_one() -> None:
    options = [("grpc.max_receive_message_length", -1)]
    with serve(handlers=echo_handlers({}), options=options) as running, running.channel() as ch:
        payload = b"u" * (6 * MiB)
        assert ch.stream_unary(f"/{SERVICE}/Count")(iter([payload]), timeout=TIMEOUT) == (str(6 * MiB).encode())
