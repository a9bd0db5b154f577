"""PoolDispatcher: calls handed to a real ThreadPoolExecutor through pullers keep the
guarantees of one work item per call (order, at most max_workers at once, the pool's
other work gets its turn), and other executors get one submit per call."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List

import pytest

from puregrpc._pool import BATCH, LINGER, PoolDispatcher


def _wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_calls_run_in_arrival_order_on_one_worker() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    dispatcher = PoolDispatcher(pool)
    assert dispatcher.limit == 1
    seen: List[int] = []
    for i in range(200):
        dispatcher.submit(lambda i=i: seen.append(i))
    _wait_for(lambda: len(seen) == 200)
    assert seen == list(range(200))
    pool.shutdown()


def test_at_most_max_workers_at_once_and_all_of_them_used() -> None:
    workers = 4
    pool = ThreadPoolExecutor(max_workers=workers)
    dispatcher = PoolDispatcher(pool)
    lock = threading.Lock()
    running = [0]
    peak = [0]
    gate = threading.Event()
    done: List[int] = []

    def call() -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        gate.wait(10)
        with lock:
            running[0] -= 1
            done.append(1)

    for _ in range(40):
        dispatcher.submit(call)
    _wait_for(lambda: running[0] == workers)
    time.sleep(0.1)  # no fifth one starts while four block
    assert running[0] == workers
    gate.set()
    _wait_for(lambda: len(done) == 40)
    assert peak[0] == workers
    pool.shutdown()


def test_the_pools_other_work_gets_its_turn() -> None:
    """One worker, a long queue of calls: a task the application submits to the same pool
    runs after at most BATCH more calls, not after the whole queue."""
    pool = ThreadPoolExecutor(max_workers=1)
    dispatcher = PoolDispatcher(pool)
    order: List[str] = []
    started = threading.Event()
    release = threading.Event()

    def first() -> None:
        started.set()
        release.wait(10)
        order.append("call")

    dispatcher.submit(first)
    started.wait(10)
    for _ in range(10 * BATCH):
        dispatcher.submit(lambda: order.append("call"))
    pool.submit(lambda: order.append("other"))
    release.set()
    _wait_for(lambda: len(order) == 10 * BATCH + 2)
    assert order.index("other") <= BATCH + 1, order.index("other")
    pool.shutdown()


def test_no_call_is_left_behind_by_a_puller_that_is_finishing() -> None:
    """Calls submitted from many threads while pullers come and go all run."""
    pool = ThreadPoolExecutor(max_workers=3)
    dispatcher = PoolDispatcher(pool)
    count = [0]
    lock = threading.Lock()

    def call() -> None:
        with lock:
            count[0] += 1

    def producer() -> None:
        for i in range(2000):
            dispatcher.submit(call)
            if i % 50 == 0:
                time.sleep(0.001)  # let the pullers run dry now and then

    threads = [threading.Thread(target=producer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _wait_for(lambda: count[0] == 8000)
    pool.shutdown()


def test_an_exception_does_not_stop_the_puller() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    dispatcher = PoolDispatcher(pool)
    seen: List[int] = []

    def boom() -> None:
        raise ValueError("handler side bug")

    dispatcher.submit(boom)
    dispatcher.submit(lambda: seen.append(1))
    _wait_for(lambda: seen == [1])
    pool.shutdown()


def test_a_shut_down_pool_raises_runtime_error() -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    dispatcher = PoolDispatcher(pool)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        dispatcher.submit(lambda: None)


def test_another_executor_gets_one_submit_per_call() -> None:
    class Recording:
        def __init__(self) -> None:
            self.items: List[Any] = []

        def submit(self, fn: Callable[[], None]) -> None:
            self.items.append(fn)
            fn()

    executor = Recording()
    dispatcher = PoolDispatcher(executor)
    assert dispatcher.limit is None
    seen: List[int] = []
    for i in range(5):
        dispatcher.submit(lambda i=i: seen.append(i))
    assert len(executor.items) == 5 and seen == [0, 1, 2, 3, 4]


class CountingPool(ThreadPoolExecutor):
    """A real ThreadPoolExecutor that counts its submits."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self.submits = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.submits += 1
        return super().submit(fn, *args, **kwargs)


def test_a_call_soon_after_the_last_is_taken_by_the_lingering_puller(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Soon" is within LINGER; a loaded test machine may take longer than 2 ms to
    # switch threads, so the test lingers longer.
    monkeypatch.setattr("puregrpc._pool.LINGER", 1.0)
    pool = CountingPool(max_workers=4)
    dispatcher = PoolDispatcher(pool)
    threads: List[int] = []
    for _ in range(20):  # one at a time, each soon after the previous one ended
        done = threading.Event()

        def call(done: threading.Event = done) -> None:
            threads.append(threading.get_ident())
            done.set()

        dispatcher.submit(call)
        assert done.wait(10)
    assert pool.submits == 1, pool.submits
    assert len(set(threads)) == 1
    pool.shutdown()


def test_a_lingering_puller_gives_its_thread_back_and_others_start_at_once() -> None:
    pool = CountingPool(max_workers=2)
    dispatcher = PoolDispatcher(pool)
    done = threading.Event()
    dispatcher.submit(done.set)
    assert done.wait(10)
    _wait_for(lambda: dispatcher._pullers == 0)  # back within LINGER (and a scheduling slice)
    # While one puller lingers, two queued calls still run at once (a second puller).
    first = threading.Event()
    dispatcher.submit(first.set)
    assert first.wait(10)
    both = threading.Barrier(2, timeout=10)
    results: List[int] = []
    dispatcher.submit(lambda: results.append(both.wait()))
    dispatcher.submit(lambda: results.append(both.wait()))
    _wait_for(lambda: len(results) == 2)
    assert sorted(results) == [0, 1]
    time.sleep(LINGER * 5)
    _wait_for(lambda: dispatcher._pullers == 0)
    # The pool's own work runs on the threads the pullers gave back.
    assert pool.submit(lambda: 42).result(10) == 42
    pool.shutdown()


def test_calls_at_the_end_of_the_linger_are_never_lost() -> None:
    """A submit can wake the lingering puller just as its wait times out, and two
    submits can both find it lingering: no call may be lost, and the wake lock is
    released once per linger (a second release raised in the submitting thread, and
    half the calls were lost). Calls come at gaps around LINGER, from two threads."""
    pool = ThreadPoolExecutor(max_workers=2)
    dispatcher = PoolDispatcher(pool)
    ran: List[int] = []
    lock = threading.Lock()

    def caller(offset: int) -> None:
        for index in range(150):
            done = threading.Event()

            def call(done: threading.Event = done, index: int = index) -> None:
                with lock:
                    ran.append(index)
                done.set()

            dispatcher.submit(call)
            assert done.wait(10), "a call was never run"
            time.sleep(LINGER * (0.5 + (index * 7 + offset) % 10 / 10))  # 0.5 to 1.4 LINGER

    callers = [threading.Thread(target=caller, args=(offset,)) for offset in (0, 3)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(30)
    assert len(ran) == 300
    _wait_for(lambda: dispatcher._pullers == 0)
    assert dispatcher._lingering == 0 and dispatcher._wake.locked(), "the wake lock was left open"
    pool.shutdown()
