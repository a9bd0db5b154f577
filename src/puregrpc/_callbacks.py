"""A thread for user callbacks that must not run on the I/O thread.

``add_callback`` callbacks and drain listeners are user code: they never run on
the I/O thread, and not in the user's pool either (a full pool must not delay a
cancellation). One daemon thread runs them in order, started on first use. At
interpreter exit, what is queued still runs: the exit waits up to ``EXIT_WAIT``
seconds for it (a drain listener queued by the SIGTERM that ends the process).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
from typing import Callable, List, Optional, Type

_LOGGER = logging.getLogger("puregrpc")

# The longest an exiting interpreter waits for queued callbacks (lifecycle.md 20: exit
# never hangs, and takes seconds at most).
EXIT_WAIT = 5.0

_callback_queue: queue.SimpleQueue[List[Callable[[], None]]] = queue.SimpleQueue()
_callback_thread: Optional[threading.Thread] = None
_callback_lock = threading.Lock()


def _callback_worker() -> None:
    while True:
        # BaseException too: a callback's sys.exit() would end this thread, and every
        # callback queued after it would wait forever.
        _run_now(_callback_queue.get(), BaseException)


def run_callbacks(callbacks: List[Callable[[], None]]) -> None:
    """Run ``callbacks`` soon, in order, on the callback thread."""
    global _callback_thread
    if _callback_thread is None:
        with _callback_lock:
            if _callback_thread is None:
                thread = threading.Thread(target=_callback_worker, name="puregrpc-callbacks", daemon=True)
                try:
                    thread.start()
                except RuntimeError:
                    # Python 3.12+ starts no thread once the interpreter is shutting down
                    # (a server stopped at exit ending its calls): run them here, now,
                    # rather than lose them or fail the stop.
                    _run_now(callbacks)
                    return
                _callback_thread = thread
    _callback_queue.put(callbacks)


def flush(timeout: Optional[float]) -> bool:
    """Wait until the callbacks queued so far have run; False if ``timeout`` passed first."""
    thread = _callback_thread
    if thread is None or thread is threading.current_thread() or not thread.is_alive():
        return True
    done = threading.Event()
    _callback_queue.put([done.set])
    return done.wait(timeout)


def _flush_at_exit() -> None:
    # The callback thread is a daemon, which the interpreter stops without a word once
    # exit handlers are done: run what is queued first. atexit's handlers run after
    # threading's (the servers' stop at exit, _server._stop_all_at_exit), so the
    # callbacks that stop queued are in the queue by now.
    if not flush(EXIT_WAIT):
        _LOGGER.warning(
            "interpreter exit: callbacks (drain listeners, RPC callbacks) still running after %gs; "
            "the rest are abandoned",
            EXIT_WAIT,
        )


def _forget_thread_in_child() -> None:
    # A forked child has no callback thread, only the parent's record of it (and a
    # queue whose lock another thread may have held): start afresh on first use.
    global _callback_thread, _callback_queue, _callback_lock
    _callback_thread = None
    _callback_queue = queue.SimpleQueue()
    _callback_lock = threading.Lock()


def _run_now(callbacks: List[Callable[[], None]], caught: Type[BaseException] = Exception) -> None:
    for callback in callbacks:
        try:
            callback()
        except caught:
            _LOGGER.exception("callback %r raised", callback)


atexit.register(_flush_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_thread_in_child)
