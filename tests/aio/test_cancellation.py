"""Client cancellation and deadlines, as asyncio cancellation of the handler's task."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable, List

import grpc
import pytest

from ._support import TIMEOUT, Events, LoopEvent, error_of, generic, method

SETTLE = 0.3  # time for a second (wrong) done callback to show up


def _handlers(events: Events) -> grpc.GenericRpcHandler:
    """Handlers that wait until cancelled and log what they see."""

    def note_done(name: str) -> Callable[[Any], None]:
        def callback(*args: Any) -> None:
            events.add(f"{name} done-callback")

        return callback

    async def unary(request: bytes, context: Any) -> bytes:
        context.add_done_callback(note_done("unary"))
        events.add("unary started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.add("unary CancelledError")
            raise
        events.add("unary not cancelled")
        return b""

    async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        context.add_done_callback(note_done("server_stream"))
        try:
            yield b"first"
            events.add("server_stream started")
            await asyncio.sleep(30)
            yield b"second"
        except asyncio.CancelledError:
            events.add("server_stream CancelledError")
            raise

    async def client_stream(request_iterator: AsyncIterator[bytes], context: Any) -> bytes:
        context.add_done_callback(note_done("client_stream"))
        try:
            async for _ in request_iterator:
                events.add("client_stream started")
        except asyncio.CancelledError:
            events.add("client_stream CancelledError")
            raise
        events.add("client_stream not cancelled")
        return b""

    async def bidi_read(request_iterator: Any, context: Any) -> None:
        context.add_done_callback(note_done("bidi_read"))
        try:
            await context.read()
            events.add("bidi_read started")
            await context.read()
        except asyncio.CancelledError:
            events.add("bidi_read CancelledError")
            raise
        events.add("bidi_read not cancelled")

    return generic(
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "BidiRead": grpc.stream_stream_rpc_method_handler(bidi_read),
        }
    )


def _requests_then_block(stop: Any) -> Any:
    yield b"one"
    stop.wait(TIMEOUT)


READ_EOF = (
    "a handler blocked reading requests sees the request stream end (async for ends, read() returns EOF) "
    "instead of CancelledError, so it may answer a cancelled call as if the client had half-closed"
)
KINDS = [
    "unary",
    "server_stream",
    pytest.param("client_stream", marks=pytest.mark.grpcaio_wrong(READ_EOF)),
    pytest.param("bidi_read", marks=pytest.mark.grpcaio_wrong(READ_EOF)),
]


def _start(ch: grpc.Channel, kind: str, timeout: float, hold: Any) -> Any:
    if kind == "unary":
        return ch.unary_unary(method("Unary")).future(b"", timeout=timeout)
    if kind == "server_stream":
        call = ch.unary_stream(method("ServerStream"))(b"", timeout=timeout)
        assert next(call) == b"first"
        return call
    if kind == "client_stream":
        return ch.stream_unary(method("ClientStream")).future(_requests_then_block(hold), timeout=timeout)
    return ch.stream_stream(method("BidiRead"))(_requests_then_block(hold), timeout=timeout)


@pytest.mark.parametrize("kind", KINDS)
def test_client_cancel_cancels_the_handler_task(served: Any, kind: str) -> None:
    import threading

    events = Events()
    hold = threading.Event()
    with served(_handlers(events)) as s, s.open_channel() as ch:
        try:
            call = _start(ch, kind, TIMEOUT, hold)
            assert events.wait_for(f"{kind} started"), events
            call.cancel()
            assert events.wait_for(f"{kind} done-callback"), events
            assert f"{kind} CancelledError" in events, events
            time.sleep(SETTLE)
            assert events.count(f"{kind} done-callback") == 1, events
            assert f"{kind} not cancelled" not in events
        finally:
            hold.set()


@pytest.mark.parametrize("kind", KINDS)
def test_deadline_cancels_the_handler_task(served: Any, kind: str) -> None:
    import threading

    events = Events()
    hold = threading.Event()
    with served(_handlers(events)) as s, s.open_channel() as ch:
        try:
            started = time.monotonic()
            call = _start(ch, kind, 1.0, hold)
            assert events.wait_for(f"{kind} done-callback"), events
            assert f"{kind} CancelledError" in events, events
            assert time.monotonic() - started > 0.8
            if kind in ("unary", "client_stream"):
                assert call.exception(TIMEOUT).code() == grpc.StatusCode.DEADLINE_EXCEEDED
            else:
                assert error_of(lambda: list(call)).code() == grpc.StatusCode.DEADLINE_EXCEEDED
            time.sleep(SETTLE)
            assert events.count(f"{kind} done-callback") == 1, events
        finally:
            hold.set()


def test_done_callbacks_run_once_with_the_context_on_every_outcome(served: Any) -> None:
    calls: List[Any] = []
    contexts: List[Any] = []

    def handler_for(outcome: str) -> Any:
        async def handler(request: bytes, context: Any) -> bytes:
            contexts.append(context)
            context.add_done_callback(lambda *args: calls.append((outcome, args)))
            context.add_done_callback(lambda *args: calls.append((outcome + " second", args)))
            if outcome == "abort":
                await context.abort(grpc.StatusCode.NOT_FOUND, "x")
            if outcome == "raise":
                raise RuntimeError("x")
            return b"ok"

        return grpc.unary_unary_rpc_method_handler(handler)

    outcomes = ["ok", "abort", "raise"]
    handlers = generic({name: handler_for(name) for name in outcomes})
    with served(handlers) as s, s.open_channel() as ch:
        for name in outcomes:
            try:
                ch.unary_unary(method(name))(b"", timeout=TIMEOUT)
            except grpc.RpcError:
                pass
        time.sleep(SETTLE)
    expected = [name for outcome in outcomes for name in (outcome, outcome + " second")]
    assert sorted(name for name, _ in calls) == sorted(expected)
    by_outcome = dict(zip(outcomes, contexts))
    for name, args in calls:
        assert args == (by_outcome[name.split()[0]],), name


def test_done_and_cancelled_while_the_rpc_runs(served: Any) -> None:
    seen: List[Any] = []

    async def handler(request: bytes, context: Any) -> bytes:
        seen.append((context.done(), context.cancelled()))
        return b""

    with served(generic({"R": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        ch.unary_unary(method("R"))(b"", timeout=TIMEOUT)
    assert seen == [(False, False)]


@pytest.mark.grpcaio_wrong("after a client cancel the context reports neither done() nor cancelled()")
def test_context_reports_cancelled_and_done_after_client_cancel(served: Any) -> None:
    events = Events()
    seen: List[Any] = []

    async def handler(request: bytes, context: Any) -> bytes:
        context.add_done_callback(lambda ctx: seen.append(("callback", context.done(), context.cancelled())))
        events.add("started")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(("handler", context.done(), context.cancelled()))
            events.add("cancelled")
            raise
        return b""

    with served(generic({"R": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        future = ch.unary_unary(method("R")).future(b"", timeout=TIMEOUT)
        assert events.wait_for("started")
        future.cancel()
        assert events.wait_for("cancelled")
        time.sleep(SETTLE)
    assert ("callback", True, True) in seen, seen
    handler_view = next(item for item in seen if item[0] == "handler")
    assert handler_view[2] is True, seen  # cancelled() is True once the handler sees CancelledError


def test_cancelled_handler_cleanup_may_await(served: Any) -> None:
    """The handler task is cancelled, not destroyed: its finally block can still await."""
    events = Events()

    async def handler(request: bytes, context: Any) -> bytes:
        events.add("started")
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.05)
            events.add("cleanup done")
        return b""

    with served(generic({"R": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        future = ch.unary_unary(method("R")).future(b"", timeout=TIMEOUT)
        assert events.wait_for("started")
        future.cancel()
        assert events.wait_for("cleanup done"), events


def test_cancel_of_one_call_leaves_others_running(served: Any) -> None:
    events = Events()
    release = LoopEvent()

    async def handler(request: bytes, context: Any) -> bytes:
        events.add(("started", request))
        try:
            await asyncio.wait_for(release.wait(), TIMEOUT)
        except asyncio.CancelledError:
            events.add(("cancelled", request))
            raise
        return request

    with served(generic({"R": grpc.unary_unary_rpc_method_handler(handler)})) as s, s.open_channel() as ch:
        futures = [ch.unary_unary(method("R")).future(bytes([i]), timeout=TIMEOUT) for i in range(3)]
        for i in range(3):
            assert events.wait_for(("started", bytes([i])))
        futures[1].cancel()
        assert events.wait_for(("cancelled", bytes([1])))
        s.loop.loop.call_soon_threadsafe(release.set)
        assert futures[0].result(TIMEOUT) == b"\x00"
        assert futures[2].result(TIMEOUT) == b"\x02"
        assert ("cancelled", b"\x00") not in events


def test_a_stop_called_from_the_handler_before_it_awaits_cancels_that_handler(served: Any) -> None:
    """stop(None) from a handler's first step (an admin 'quit' RPC) cancels that handler
    too. From Python 3.12 puregrpc.aio runs that step inside the task's creation (eager
    start), before the task is known: the cancel must still reach it."""
    events = Events()
    servers: List[Any] = []

    async def quit_now(request: bytes, context: Any) -> bytes:
        try:
            await servers[0].stop(None)
            events.add("stop returned")
            await asyncio.sleep(TIMEOUT)
        except asyncio.CancelledError:
            events.add("CancelledError")
            raise
        events.add("not cancelled")
        return b""

    handlers = generic({"Quit": grpc.unary_unary_rpc_method_handler(quit_now)})
    with served(handlers, setup=servers.append) as s, s.open_channel() as ch:
        code = error_of(lambda: ch.unary_unary(method("Quit"))(b"", timeout=TIMEOUT)).code()
        assert events.wait_for("CancelledError", timeout=2.0), events
        assert code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE), code
        assert "not cancelled" not in events


def test_a_task_cancelled_before_its_first_step_is_not_kept_by_the_server() -> None:
    """Two requests in one read make two tasks; the first one's handler stops the server
    before the second task has taken a step (before Python 3.12, where tasks do not start
    eagerly). The second is cancelled before it runs, so its coroutine never runs its own
    cleanup: the server must still let go of it (its set of running tasks ends empty)."""
    import socket

    import h2.config
    import h2.connection

    from ._support import grpc_message, serve

    events = Events()
    servers: List[Any] = []

    async def quit_now(request: bytes, context: Any) -> bytes:
        await servers[0].stop(None)
        return b""

    async def other(request: bytes, context: Any) -> bytes:
        events.add("other ran")
        return b""

    handlers = generic(
        {
            "Quit": grpc.unary_unary_rpc_method_handler(quit_now),
            "Other": grpc.unary_unary_rpc_method_handler(other),
        }
    )
    with serve("puregrpc", handlers, setup=servers.append) as s:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=TIMEOUT)
        try:
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            for name in ("Quit", "Other"):
                sid = conn.get_next_available_stream_id()
                headers = [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", method(name)),
                    (":authority", s.target),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ]
                conn.send_headers(sid, headers)
                conn.send_data(sid, grpc_message(b""), end_stream=True)
            sock.sendall(conn.data_to_send())  # both requests in one write
            s.run(s.server.wait_for_termination(TIMEOUT))
            time.sleep(SETTLE)  # cancelled tasks finish on the loop's next turns
            left = s.loop.call(lambda: len(s.server._core.tasks))
        finally:
            sock.close()
    assert left == 0
    assert "other ran" not in events
