"""Handing RPCs to the user's thread pool, cheaply.

``ThreadPoolExecutor.submit`` costs more than the rest of a small unary call on the
loop's side (a Future, a work item, a semaphore built on a Condition), and the loop
thread is what a busy server runs out of. So where the pool is a
``ThreadPoolExecutor`` (its size is known), calls wait in a deque of our own and the
pool is given *pullers*: work items that run queued calls one after another. A
puller is submitted only while fewer than the pool's ``max_workers`` are at work, so
under load a call costs a deque append, not a submit.

What stays as with one work item per call: calls start in arrival order, at most
``max_workers`` at once, each on one pool thread for its whole life. So that other
work the application gives the same pool still gets its turn, a puller that has run
``BATCH`` calls goes to the back of the pool's queue before it runs more. One puller
that runs out of calls waits up to ``LINGER`` for the next before giving its thread
back, so that calls one after another (a client with one call in flight) do not each
cost a submit. Any other executor (only ``submit`` is known of it) gets one
``submit`` per call.
"""

from __future__ import annotations

import collections
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Deque, Optional

_LOGGER = logging.getLogger("puregrpc")

BATCH = 16
# How long a puller that found nothing to run waits for the next call before it gives
# its pool thread back. Under steady traffic calls come closer together than this, and
# a waiting puller is woken (one lock release) instead of a new one being submitted (a
# Future, a work item, a queue put and the pool's semaphore: about 10% of a small
# unary call's CPU). An idle server's pullers are all gone LINGER after its last call.
LINGER = 0.002


class PoolDispatcher:
    def __init__(self, pool: Any) -> None:
        self.pool = pool
        limit = getattr(pool, "_max_workers", None) if isinstance(pool, ThreadPoolExecutor) else None
        self.limit: Optional[int] = limit if isinstance(limit, int) and limit > 0 else None
        self._ready: Deque[Callable[[], None]] = collections.deque()
        self._lock = threading.Lock()
        # The lingering puller (one at most) waits on this lock, held while nobody has
        # woken it; a submit wakes it by releasing it, once (``_woken``). A Condition
        # would do the same in Python code (a waiter lock made per wait, a notify that
        # walks its waiters): 9% of a sync unary call's instructions, one call at a time.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._woken = False
        self._pullers = 0  # pullers submitted and not returned (lingering ones included)
        self._lingering = 0

    def submit(self, run: Callable[[], None]) -> None:
        """Run ``run()`` on a pool thread. RuntimeError if the pool has been shut down."""
        if self.limit is None:
            self.pool.submit(run)
            return
        ready = self._ready
        ready.append(run)
        with self._lock:
            if self._lingering:
                if not self._woken:
                    self._woken = True
                    self._wake.release()
                if len(ready) == 1:
                    return  # the lingering puller takes it
            if self._pullers >= self.limit:
                return  # a puller at work will take it
            self._pullers += 1
        try:
            self.pool.submit(self._pull)
        except BaseException:
            with self._lock:
                self._pullers -= 1
            raise

    def _pull(self) -> None:
        ready = self._ready
        while True:
            done = 0
            while done < BATCH:
                try:
                    run = ready.popleft()
                except IndexError:
                    break
                done += 1
                try:
                    run()
                except Exception:  # each run() ends its own call; the puller goes on
                    _LOGGER.exception("puregrpc: error in a pool work item")
                except BaseException:
                    with self._lock:
                        self._pullers -= 1
                    raise
            if done == BATCH and ready:
                try:
                    self.pool.submit(self._pull)  # the back of the pool's queue: others' turn
                    return
                except RuntimeError:  # the pool is shutting down: finish the queue here
                    continue
            with self._lock:
                # A call queued after the deque looked empty found this puller still
                # counted (or lingering): it is taken here, never left with nobody to
                # run it. Whether woken or timed out, the deque decides.
                if not ready and not self._lingering:
                    self._lingering = 1  # one at most: more only thrash under load
                    self._woken = False
                    self._lock.release()
                    try:
                        woke = self._wake.acquire(True, LINGER)
                    finally:
                        self._lock.acquire()
                    if self._woken and not woke:
                        self._wake.acquire()  # released after the timeout: held again
                    self._lingering = 0
                if not ready:
                    self._pullers -= 1
                    return


__all__ = ["BATCH", "LINGER", "PoolDispatcher"]
