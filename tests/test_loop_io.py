"""LoopIO's batches: work run by the loop whose output is flushed once, at the batch's end,
with no flush left scheduled for a later turn of the loop (a turn per RPC otherwise)."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, List, Optional

import pytest

from puregrpc._loop import LoopIO


class CountingLoop(asyncio.SelectorEventLoop):
    """asyncio's own loop, noting the callbacks it is handed for its next turn."""

    def __init__(self) -> None:
        super().__init__()
        self.soon: List[str] = []

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> Any:
        self.soon.append(getattr(callback, "__name__", repr(callback)))
        return super().call_soon(callback, *args, context=context)


class Output:
    def __init__(self) -> None:
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture()
def io() -> Any:
    loop = CountingLoop()
    io = LoopIO()
    io.attach(loop, threading.current_thread())
    yield io
    loop.close()


def _turns(io: LoopIO, count: int) -> None:
    """Run the loop for ``count`` turns."""
    for _ in range(count):
        io.loop.call_soon(io.loop.stop)
        io.loop.run_forever()


def test_work_posted_from_a_thread_is_flushed_at_the_end_of_its_drain_and_no_later_flush_is_scheduled(
    io: LoopIO,
) -> None:
    out = Output()
    seen: List[int] = []

    def work() -> None:
        io.mark_dirty(out)
        io.mark_dirty(out)
        seen.append(out.flushes)  # not flushed yet: the batch is still running

    thread = threading.Thread(target=io.post, args=(work,))
    thread.start()
    thread.join()
    _turns(io, 2)
    assert seen == [0]
    assert out.flushes == 1
    assert "flush_dirty" not in io.loop.soon  # type: ignore[attr-defined]


def test_mark_dirty_outside_a_batch_schedules_one_flush_for_the_next_turn(io: LoopIO) -> None:
    out = Output()
    io.mark_dirty(out)
    io.mark_dirty(out)
    assert out.flushes == 0
    assert io.loop.soon.count("flush_dirty") == 1  # type: ignore[attr-defined]
    _turns(io, 1)
    assert out.flushes == 1


def test_a_drain_whose_work_raises_still_flushes_and_later_output_is_still_scheduled(io: LoopIO) -> None:
    out = Output()
    errors: List[Any] = []
    io.loop.set_exception_handler(lambda loop, context: errors.append(context.get("exception")))

    def buggy() -> None:
        io.mark_dirty(out)
        raise RuntimeError("handler bug")

    io.post(buggy)
    _turns(io, 2)
    assert [type(exc) for exc in errors] == [RuntimeError]
    assert out.flushes == 1  # the drain's end flushed what it marked before the error
    io.mark_dirty(out)  # the batch is over: a flush is scheduled again, not lost
    _turns(io, 1)
    assert out.flushes == 2


def test_end_batch_flushes_the_item_it_is_given_even_if_nothing_marked_it(io: LoopIO) -> None:
    out = Output()
    io.begin_batch()
    io.end_batch(out)
    assert out.flushes == 1


def test_puregrpc_aio_answers_in_the_turn_its_handler_runs() -> None:
    """Loop turns per call, grpcio's client calling one after another. A read is a batch:
    the tasks it wakes or starts run on the next turn, and the flush the batch schedules
    runs after them in that turn (2 turns per unary call or bidi message; 3 if each write
    waited for a turn of its own). From Python 3.12 a unary handler that awaits nothing
    runs in the read itself (eager start): 1 turn per call."""
    import sys

    import grpc

    from puregrpc import aio as puregrpc_aio

    class TurnCountingLoop(asyncio.SelectorEventLoop):
        turns = 0

        def _run_once(self) -> None:
            self.turns += 1
            super()._run_once()  # type: ignore[misc]

    loop = TurnCountingLoop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def echo(request: bytes, context: Any) -> bytes:
        return request

    async def bidi(requests: Any, context: Any) -> Any:
        async for request in requests:
            yield request

    async def start() -> Any:
        server = puregrpc_aio.server()
        methods = {"U": grpc.unary_unary_rpc_method_handler(echo), "B": grpc.stream_stream_rpc_method_handler(bidi)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", methods),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    calls = 100
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary("/t.S/U")
            for _ in range(10):
                assert unary(b"warm", timeout=10) == b"warm"
            before = loop.turns
            for index in range(calls):
                assert unary(b"%d" % index, timeout=10) == b"%d" % index
            unary_turns = loop.turns - before

            outbox: queue.Queue[Optional[bytes]] = queue.Queue()
            replies = channel.stream_stream("/t.S/B")(iter(outbox.get, None), timeout=10)
            for _ in range(10):
                outbox.put(b"warm")
                assert next(replies) == b"warm"
            before = loop.turns
            for index in range(calls):
                outbox.put(b"%d" % index)
                assert next(replies) == b"%d" % index
            bidi_turns = loop.turns - before
            outbox.put(None)
            assert list(replies) == []
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    slack = 10  # the client's own frames now and then (BDP pings, window updates)
    per_unary = 1 if sys.version_info >= (3, 12) else 2
    assert unary_turns <= per_unary * calls + slack, unary_turns
    assert bidi_turns <= 2 * calls + slack, bidi_turns
