"""start / stop(grace) / wait_for_termination as coroutines on the caller's loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import grpc
import pytest

from ._support import TIMEOUT, Events, aio_module, error_of, generic, grpc_message, method, wait_for


def _handlers(events: Events) -> grpc.GenericRpcHandler:
    async def sleep(request: bytes, context: Any) -> bytes:
        events.add("started")
        try:
            await asyncio.sleep(float(request))
        except asyncio.CancelledError:
            events.add("cancelled")
            raise
        events.add("finished")
        return b"slept"

    async def quick(request: bytes, context: Any) -> bytes:
        return b"quick"

    return generic(
        {"Sleep": grpc.unary_unary_rpc_method_handler(sleep), "Quick": grpc.unary_unary_rpc_method_handler(quick)}
    )


def _quick(ch: grpc.Channel) -> Any:
    return ch.unary_unary(method("Quick"))(b"", timeout=TIMEOUT)


# --- wait_for_termination ------------------------------------------------------------


def test_wait_for_termination_timeout_returns_true(served: Any) -> None:
    with served(_handlers(Events())) as s:
        started = time.monotonic()
        assert s.run(s.server.wait_for_termination(0.5)) is True
        assert 0.45 <= time.monotonic() - started < 3.0
        for timeout in (0, -1):
            started = time.monotonic()
            assert s.run(s.server.wait_for_termination(timeout)) is True
            assert time.monotonic() - started < 0.5


def test_wait_for_termination_after_stop_returns_false_at_once(served: Any) -> None:
    with served(_handlers(Events())) as s:
        s.stop(None)
        for timeout in (None, 0, 5.0):
            started = time.monotonic()
            assert s.run(s.server.wait_for_termination(timeout)) is False
            assert time.monotonic() - started < 0.5


def test_many_waiters_are_all_released_by_stop(served: Any) -> None:
    with served(_handlers(Events())) as s:

        async def scenario() -> Tuple[List[Any], float]:
            waiters = [asyncio.ensure_future(s.server.wait_for_termination()) for _ in range(10)]
            waiters += [asyncio.ensure_future(s.server.wait_for_termination(30)) for _ in range(10)]
            await asyncio.sleep(0.1)
            assert not any(w.done() for w in waiters)
            started = time.monotonic()
            await s.server.stop(5.0)  # nothing in flight: must not wait out the grace
            results = await asyncio.wait_for(asyncio.gather(*waiters), TIMEOUT)
            return results, time.monotonic() - started

        results, took = s.run(scenario())
        assert results == [False] * 20
        assert took < 3.0


def test_waiting_before_start(served: Any) -> None:
    with served(_handlers(Events()), start=False) as s:

        async def scenario() -> Any:
            waiter = asyncio.ensure_future(s.server.wait_for_termination())
            await asyncio.sleep(0.05)
            await s.server.start()
            await asyncio.sleep(0.05)
            assert not waiter.done()
            await s.server.stop(None)
            return await asyncio.wait_for(waiter, TIMEOUT)

        assert s.run(scenario()) is False


@pytest.mark.grpcaio_wrong(
    "cancelling one wait_for_termination() cancels the server's termination future: "
    "every other waiter gets CancelledError and stop() raises CancelledError"
)
def test_cancelling_one_waiter_affects_that_waiter_alone(served: Any) -> None:
    with served(_handlers(Events())) as s:

        async def scenario() -> Dict[str, Any]:
            forever = asyncio.ensure_future(s.server.wait_for_termination())
            bounded = asyncio.ensure_future(s.server.wait_for_termination(30))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(s.server.wait_for_termination(), 0.2)
            explicit = asyncio.ensure_future(s.server.wait_for_termination())
            await asyncio.sleep(0.05)
            explicit.cancel()
            await asyncio.sleep(0.1)
            state = {"others done early": forever.done() or bounded.done()}
            await s.server.stop(0)  # must not raise
            state["results"] = await asyncio.wait_for(asyncio.gather(forever, bounded), TIMEOUT)
            state["after"] = await s.server.wait_for_termination(1.0)
            return state

        assert s.run(scenario()) == {"others done early": False, "results": [False, False], "after": False}


# --- stop(grace) ---------------------------------------------------------------------


def test_stop_with_grace_lets_the_in_flight_call_finish(served: Any) -> None:
    events = Events()
    with served(_handlers(events)) as s, s.open_channel() as ch:
        _quick(ch)
        in_flight = ch.unary_unary(method("Sleep")).future(b"1.0", timeout=TIMEOUT)
        assert events.wait_for("started")
        started = time.monotonic()
        stopping = s.spawn(s.server.stop(5.0))
        waiter = s.spawn(s.server.wait_for_termination())
        time.sleep(0.2)
        # new calls are refused while the in-flight one runs: on the old channel and on a new one
        assert error_of(lambda: _quick(ch)).code() == grpc.StatusCode.UNAVAILABLE
        with s.open_channel() as fresh:
            assert error_of(lambda: _quick(fresh)).code() == grpc.StatusCode.UNAVAILABLE
        assert not waiter.done()
        assert in_flight.result(TIMEOUT) == b"slept"
        stopping.result(TIMEOUT)
        assert waiter.result(TIMEOUT) is False
        took = time.monotonic() - started
        assert 0.6 < took < 4.0, "stop() returns when the last call ends, not at the grace's end"
        assert "cancelled" not in events


def test_grace_end_cancels_the_handler_task(served: Any) -> None:
    events = Events()
    with served(_handlers(events)) as s, s.open_channel() as ch:
        in_flight = ch.unary_unary(method("Sleep")).future(b"30", timeout=TIMEOUT)
        assert events.wait_for("started")
        started = time.monotonic()
        s.stop(1.0)
        took = time.monotonic() - started
        assert 0.9 < took < 5.0
        assert events.wait_for("cancelled"), events
        assert in_flight.exception(TIMEOUT).code() == grpc.StatusCode.UNAVAILABLE
        assert s.run(s.server.wait_for_termination(0)) is False


@pytest.mark.parametrize("grace", [None, 0])
def test_stop_without_grace_cancels_at_once(served: Any, grace: Optional[float]) -> None:
    events = Events()
    with served(_handlers(events)) as s, s.open_channel() as ch:
        in_flight = ch.unary_unary(method("Sleep")).future(b"30", timeout=TIMEOUT)
        assert events.wait_for("started")
        started = time.monotonic()
        s.stop(grace)
        assert time.monotonic() - started < 3.0
        assert events.wait_for("cancelled"), events
        assert in_flight.exception(TIMEOUT).code() == grpc.StatusCode.UNAVAILABLE


def test_a_second_stop_with_less_grace_wins(served: Any) -> None:
    events = Events()
    with served(_handlers(events)) as s, s.open_channel() as ch:
        in_flight = ch.unary_unary(method("Sleep")).future(b"30", timeout=TIMEOUT)
        assert events.wait_for("started")

        async def scenario() -> float:
            started = time.monotonic()
            long = asyncio.ensure_future(s.server.stop(20))
            await asyncio.sleep(0.3)
            await s.server.stop(None)
            await asyncio.wait_for(long, TIMEOUT)
            return time.monotonic() - started

        assert s.run(scenario()) < 5.0
        assert events.wait_for("cancelled")
        assert in_flight.exception(TIMEOUT).code() == grpc.StatusCode.UNAVAILABLE


def test_stop_before_start_changes_nothing(served: Any) -> None:
    with served(_handlers(Events()), start=False) as s:
        s.stop(None)
        s.stop(1.0)
        assert s.run(s.server.wait_for_termination(0)) is True
        s.run(s.server.start())
        with s.open_channel() as ch:
            assert _quick(ch) == b"quick"
        s.stop(None)
        s.stop(1.0)
        assert s.run(s.server.wait_for_termination(0)) is False


def test_stopped_server_refuses_connections(served: Any) -> None:
    with served(_handlers(Events())) as s, s.open_channel() as ch:
        _quick(ch)
        s.stop(None)
        assert wait_for(lambda: _refused(s.port), 3.0)
        assert error_of(lambda: _quick(ch)).code() == grpc.StatusCode.UNAVAILABLE


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return True
    return False


# --- an RPC that arrives the instant stop() begins -----------------------------------


def _h2_connect(port: int) -> socket.socket:
    """A connection past the preface and the SETTINGS exchange (the h2 library frames it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0, b""))
    buffer = b""
    while True:
        frames, buffer = _split(buffer + sock.recv(65536))
        if any(kind == 0x4 and not flags & 0x1 for kind, flags, _, _ in frames):
            break
    sock.sendall(_frame(0x4, 0x1, 0, b""))  # SETTINGS ack
    return sock


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _split(data: bytes) -> Tuple[List[Tuple[int, int, int, bytes]], bytes]:
    frames = []
    while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames, data


def _unary_request(stream: int, path: str) -> bytes:
    import hpack

    block = hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    return _frame(0x1, 0x4, stream, block) + _frame(0x0, 0x1, stream, grpc_message(b"x"))


def _fate(sock: socket.socket, stream: int) -> str:
    """How the server ended ``stream``: "ok", "refused" (REFUSED_STREAM, grpc-status 14, or left out
    of GOAWAY's last stream id) or a description of anything else."""
    import hpack

    decoder = hpack.Decoder()
    buffer = b""
    last_stream: Optional[int] = None
    end = time.monotonic() + TIMEOUT
    sock.settimeout(1.0)
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        frames, buffer = _split(buffer + chunk)
        for kind, flags, sid, payload in frames:
            if kind == 0x7:
                last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if last_stream < stream:
                    return "refused"
            elif kind == 0x1:
                if flags & 0x8:
                    payload = payload[1 : len(payload) - payload[0]]
                if flags & 0x20:
                    payload = payload[5:]
                headers = dict(decoder.decode(payload))
                if sid == stream and "grpc-status" in headers:
                    status = headers["grpc-status"]
                    return {"0": "ok", "14": "refused"}.get(status, f"grpc-status {status}")
            elif kind == 0x3 and sid == stream:
                code = int.from_bytes(payload, "big")
                if code == 0x7:
                    return "refused"
                return f"RST_STREAM {code} (GOAWAY last stream {last_stream})"
    if last_stream is not None and last_stream < stream:
        return "refused"
    return f"no end of stream (GOAWAY last stream {last_stream})"


@pytest.mark.grpcaio_wrong(
    "a request that arrives as stop() begins is included in GOAWAY's last stream id, then reset with "
    "RST_STREAM(NO_ERROR) and no status: grpcio clients see CANCELLED",
    strict=False,
)
def test_request_arriving_as_stop_begins_is_served_or_refused(served: Any) -> None:
    """On the wire: the stream is either served (grace 5 s) or refused in a way clients retry or
    report as UNAVAILABLE; never accepted and then dropped. Five servers, to catch the race."""
    fates = []
    for _ in range(5):
        with served(_handlers(Events())) as s:
            sock = _h2_connect(s.port)

            async def arrive_and_stop(sock: socket.socket = sock) -> None:
                sock.sendall(_unary_request(1, method("Quick")))
                await s.server.stop(5.0)

            try:
                stopping = s.spawn(arrive_and_stop())
                fates.append(_fate(sock, 1))
            finally:
                sock.close()
            s.stop(None)
            stopping.result(TIMEOUT)
    assert set(fates) <= {"ok", "refused"}, fates


@pytest.mark.grpcaio_wrong("an RPC that arrives as stop() begins ends CANCELLED", strict=False)
def test_rpc_arriving_as_stop_begins_is_never_cancelled(served: Any) -> None:
    """grpcio's client: such an RPC ends OK (served within the grace) or UNAVAILABLE."""
    codes = []
    for _ in range(12):
        with served(_handlers(Events())) as s, s.open_channel() as ch:
            _quick(ch)
            call = ch.unary_unary(method("Quick"))
            stopping = s.spawn(s.server.stop(5.0))
            future = call.future(b"", timeout=TIMEOUT)
            error = future.exception(TIMEOUT)
            stopping.result(TIMEOUT)
            codes.append(grpc.StatusCode.OK if error is None else error.code())
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes


# --- the caller's loop ------------------------------------------------------------------


def test_server_runs_on_the_callers_loop_under_asyncio_run(flavour: str) -> None:
    """``asyncio.run(main())`` with the server and grpc.aio's client on the same loop."""
    aio = aio_module(flavour)
    seen: List[Any] = []

    async def handler(request: bytes, context: Any) -> bytes:
        seen.append(asyncio.get_running_loop())
        return request * 2

    def blocking(request: bytes, context: Any) -> bytes:
        seen.append(threading.current_thread().name)
        return request * 3

    async def main() -> Tuple[Any, bytes, bytes, bytes, bool]:
        pool = ThreadPoolExecutor(2, thread_name_prefix="migration")
        server = aio.server(migration_thread_pool=pool)
        server.add_generic_rpc_handlers(
            (
                generic(
                    {
                        "Twice": grpc.unary_unary_rpc_method_handler(handler),
                        "Thrice": grpc.unary_unary_rpc_method_handler(blocking),
                    }
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                twice = await ch.unary_unary(method("Twice"))(b"ab", timeout=TIMEOUT)
                thrice = await ch.unary_unary(method("Thrice"))(b"c", timeout=TIMEOUT)
            loop = asyncio.get_running_loop()
            # a blocking client in a worker thread: the loop is free while the call runs
            with grpc.insecure_channel(f"127.0.0.1:{port}") as sync_ch:
                from_thread = await loop.run_in_executor(
                    None, lambda: sync_ch.unary_unary(method("Twice"))(b"t", timeout=TIMEOUT)
                )
        finally:
            await server.stop(1.0)
        terminated = await server.wait_for_termination(TIMEOUT)
        pool.shutdown()
        return loop, twice, thrice, from_thread, terminated

    loop, twice, thrice, from_thread, terminated = asyncio.run(main())
    assert (twice, thrice, from_thread, terminated) == (b"abab", b"ccc", b"tt", False)
    assert seen[0] is loop and seen[2] is loop
    assert str(seen[1]).startswith("migration")


def test_servers_on_two_loops_one_after_another(flavour: str) -> None:
    """A process may run asyncio.run() more than once; each server lives on its own loop."""
    aio = aio_module(flavour)

    async def handler(request: bytes, context: Any) -> bytes:
        return request

    async def main(payload: bytes) -> bytes:
        server = aio.server()
        server.add_generic_rpc_handlers((generic({"Echo": grpc.unary_unary_rpc_method_handler(handler)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                return await loop.run_in_executor(
                    None, lambda: ch.unary_unary(method("Echo"))(payload, timeout=TIMEOUT)
                )
        finally:
            await server.stop(None)

    assert asyncio.run(main(b"first")) == b"first"
    assert asyncio.run(main(b"second")) == b"second"


def test_stop_requested_from_inside_a_handler(served: Any) -> None:
    """A handler may start the server's stop (as a task) and still answer its own call."""
    tasks: List[Any] = []

    with served(start=False) as s:

        async def shutdown(request: bytes, context: Any) -> bytes:
            tasks.append(asyncio.ensure_future(s.server.stop(5.0)))
            await asyncio.sleep(0.1)
            return b"bye"

        async def scenario() -> Any:
            s.server.add_generic_rpc_handlers((generic({"Shutdown": grpc.unary_unary_rpc_method_handler(shutdown)}),))
            await s.server.start()
            return asyncio.ensure_future(s.server.wait_for_termination())

        waiter = s.run(scenario())
        started = time.monotonic()
        with s.open_channel() as ch:
            assert ch.unary_unary(method("Shutdown"))(b"", timeout=TIMEOUT) == b"bye"

        async def finish() -> Any:
            await asyncio.wait_for(tasks[0], TIMEOUT)
            return await asyncio.wait_for(waiter, TIMEOUT)

        assert s.run(finish()) is False
        assert time.monotonic() - started < 4.0, "termination follows the call's end, not the grace"
