"""The loops that drive connections.

``IOThread``: one asyncio loop, on a thread of its own, for every socket of every
sync server in the process. It never blocks and never runs user code.
``LoopIO``: the same interface on a loop the caller already runs (``puregrpc.aio``).

Other threads hand a loop work with ``post()``: calls queue in a deque and one
wake-up of the loop runs them all, so a burst of completions from handler threads
costs one wake-up, not one each.

Output is written by flushing what was marked dirty. Work that ends in a flush anyway
(a connection's read, a burst of posted calls) runs as a batch: what it marks dirty is
flushed at its end, not on a later turn of the loop; and where it made handler tasks
ready, the flush it schedules runs after their steps, in the same turn.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
from typing import Any, Callable, Deque, Optional, Protocol, Set, Tuple, TypeVar

T = TypeVar("T")


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


class Flushable(Protocol):
    """Something with output to write once the current batch of work is done."""

    def flush(self) -> None: ...


class LoopIO:
    """Drives connections on ``loop``, which ``thread`` runs. A ``puregrpc.aio`` server
    attaches it to the caller's running loop when it starts."""

    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def __init__(self) -> None:
        self._queue: Deque[Tuple[Callable[..., Any], Tuple[Any, ...]]] = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._dirty: Set[Flushable] = set()
        self._flush_scheduled = False
        self._in_batch = False
        self._tasks_woken = False  # in this batch (see task_woken)

    def attach(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.loop = loop
        self.thread = thread

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is getattr(self, "thread", None)  # None until attached

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon. Safe from any thread."""
        self._queue.append((fn, args))
        with self._lock:
            if self._wake_pending:
                return
            self._wake_pending = True
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._wake_pending = False
        self.begin_batch()
        try:
            queue = self._queue
            while queue:
                fn, args = queue.popleft()
                fn(*args)
        finally:
            self.end_batch()

    def mark_dirty(self, item: Flushable) -> None:
        """Loop thread only: ``item.flush()`` runs at the end of this iteration (or of
        the batch being run)."""
        self._dirty.add(item)
        if not self._flush_scheduled and not self._in_batch:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush_dirty)

    def begin_batch(self) -> None:
        """Loop thread only: what is marked dirty until ``end_batch()`` is flushed by it,
        with no flush scheduled for a later turn of the loop (a turn per RPC otherwise:
        the thread's answer, or a handler run as its request is read, marks its
        connection dirty in a batch that ends in a flush anyway)."""
        self._in_batch = True

    def end_batch(self, item: Optional[Flushable] = None) -> None:
        """Loop thread only: flush ``item`` and whatever the batch marked dirty."""
        self._in_batch = False
        if item is not None:
            self._dirty.add(item)
        self.flush_dirty()
        if self._tasks_woken:
            # After the steps of the tasks the batch woke, in the same turn of the loop:
            # what they write leaves then, not a turn later.
            self._tasks_woken = False
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self.loop.call_soon(self.flush_dirty)

    def task_woken(self) -> None:
        """Loop thread only: a task was just made ready (its step runs on the loop's next
        turn) and may write. In a batch, that batch's end schedules the flush after it."""
        if self._in_batch:
            self._tasks_woken = True

    def check_running(self) -> None:
        """Raise if no thread runs the loop any more (an ``IOThread`` after a fork)."""

    def flush_dirty(self) -> None:
        self._flush_scheduled = False
        dirty = self._dirty
        while dirty:
            dirty.pop().flush()

    def call(self, fn: Callable[[], T], timeout: Optional[float] = None) -> T:
        """Run ``fn`` on the loop and return its result (directly if already there)."""
        if self.in_loop_thread():
            return fn()
        self.check_running()
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            try:
                box.append((True, fn()))
            except BaseException as exc:
                box.append((False, exc))
            finally:
                done.set()

        self.post(run)
        if not done.wait(timeout):
            raise TimeoutError("the puregrpc I/O thread did not answer")
        ok, value = box[0]
        if not ok:
            raise value
        result: T = value
        return result


class IOThread(LoopIO):
    """A loop of its own, run forever by a daemon thread named ``puregrpc-io``."""

    def __init__(self) -> None:
        super().__init__()
        self.attach(_new_event_loop(), threading.Thread(target=self._run, name="puregrpc-io", daemon=True))
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def check_running(self) -> None:
        if not self.thread.is_alive():
            raise RuntimeError(
                "this server's I/O thread is in the process this one was forked from: a server "
                "started before os.fork() serves in the parent only; start servers in the child"
            )


_io: Optional[IOThread] = None
_io_lock = threading.Lock()


def io_thread() -> IOThread:
    """The process's I/O thread, started on first use."""
    global _io
    if _io is None:
        with _io_lock:
            if _io is None:
                _io = IOThread()
    return _io


def _forget_io_thread_in_child() -> None:
    # A forked child has only the parent's record of the I/O thread, not the thread:
    # its servers get a thread of their own on first use (the parent's loop, whose
    # epoll and self-pipe the child shares, is left alone).
    global _io, _io_lock
    _io = None
    _io_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_io_thread_in_child)
