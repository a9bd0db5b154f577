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
        for callback in _callback_queue.get():
            try:
                callback()
            except Exception:
                _LOGGER.exception("RPC termination callback %r raised", callback)


def run_callbacks(callbacks: List[Callable[[], None]]) -> None:
    """Run ``callbacks`` soon, in order, on the callback thread."""
    global _callback_thread
    if _callback_thread is None:
        with _callback_lock:
            if _callback_thread is None:
                thread = threading.Thread(target=_callback_worker, name="puregrpc-callbacks", daemon=True)
                thread.start()
                _callback_thread = thread
    _callback_queue.put(callbacks)
