"""Serving until a signal: ``puregrpc.run(server, grace, drain_delay)`` (lifecycle.md 22-24).

``wait_for_termination`` stays signal-free (gRFC L54); this opt-in helper owns the
main thread's SIGTERM and SIGINT handlers while it runs, and puts the previous
ones back when it returns.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ._lifecycle import State

_LOGGER = logging.getLogger("puregrpc")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run(server: Any, grace: Optional[float] = 10.0, drain_delay: float = 0.0) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; main thread only.

    First signal: drain listeners run (the health service turns every service
    NOT_SERVING), the server keeps serving for ``drain_delay`` seconds so load
    balancers can notice, then ``server.stop(grace)``. A second signal cancels
    every RPC at once (``stop(None)``). Returns once the server has terminated.
    Starts the server if it was not started yet.
    """
    serve_until_signal(server, grace, drain_delay)


# How long run() waits, after the server terminated, for its connections to close.
_CLOSE_WAIT = 1.0


def serve_until_signal(
    server: Any, grace: Optional[float], drain_delay: float, ready: Optional[Callable[[], None]] = None
) -> None:
    """``run()``, calling ``ready()`` once the signal handlers are in place (so that a
    signal sent as soon as ``ready()`` has said so drains, rather than kills)."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "puregrpc.run() must be called from the main thread (signal handlers can only "
            "be installed there); in other threads use server.wait_for_termination()"
        )
    if drain_delay < 0:
        raise ValueError(f"drain_delay must be >= 0, got {drain_delay!r}")
    core = server._core
    if core.lifecycle.state is State.NEW:
        server.start()
    received: List[int] = []
    forced = threading.Event()

    def drain() -> None:
        core.notify_drain()
        if drain_delay > 0 and forced.wait(drain_delay):
            return
        server.stop(grace)

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            _LOGGER.info(
                "%s received: draining (drain delay %gs, grace %ss); send it again to cancel every RPC",
                name,
                drain_delay,
                grace,
            )
            threading.Thread(target=drain, name="puregrpc-drain", daemon=True).start()
        else:
            _LOGGER.info("%s received again: cancelling every RPC", name)
            forced.set()
            threading.Thread(target=server.stop, args=(None,), name="puregrpc-force", daemon=True).start()

    previous: Dict[int, Any] = {}
    try:
        for sig in _SIGNALS:
            previous[int(sig)] = signal.signal(sig, on_signal)
        if ready is not None:
            ready()
        # In the main thread this waits on the signal wakeup fd, so the handlers run
        # whichever thread the kernel hands the signal to (Lifecycle.wait).
        server.wait_for_termination()
        # The process usually exits next: let the connections finish their graceful
        # close (final GOAWAY, FIN, the peer's FIN) first, for at most a second.
        core.sockets_closed.wait(_CLOSE_WAIT)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def serve_summary(server: Any, started: float) -> str:
    """One line on how the server ended: RPCs finished, cancelled, time taken."""
    stats = server._core.stats
    return (
        f"stopped after {time.monotonic() - started:.2f}s: "
        f"{stats['finished']} RPCs finished, {stats['cancelled']} cancelled"
    )
