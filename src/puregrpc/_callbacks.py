"""A thread for user callbacks that must not run on the I/O thread.

``add_callback`` callbacks and drain listeners are user code: they never run on
the I/O thread, and not in the user's pool either (a full pool must not delay a
cancellation). One daemon thread runs them in order, started on first use.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable, List, Optional

_LOGGER = logging.getLogger("puregrpc")

_callback_queue: queue.SimpleQueue[List[Callable[[], None]]] = queue.SimpleQueue()
_callback_thread: Optional[threading.Thread] = None
_callback_lock = threading.Lock()


def _callback_worker() -> None:
    while True:
        _run_now(_callback_queue.get())


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


def _run_now(callbacks: List[Callable[[], None]]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            _LOGGER.exception("RPC termination callback %r raised", callback)
