"""The server lifecycle as a state table (gRFC L54; docs/lifecycle.md).

Theory of operation: a server is in one of four states. Four inputs move it:
``ADD_PORT``, ``START`` and ``STOP`` come from the public API, ``DRAINED`` from
the I/O layer when the last RPC of a stopping server has ended. ``TABLE`` maps
each (state, input) pair to the next state and, for a misuse, the exception the
caller gets. Nothing here does I/O: ``Lifecycle`` only records the state, the
stop deadline, and the termination event that ``wait_for_termination`` blocks on.
"""

from __future__ import annotations

import enum
import math
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, Type


class State(enum.Enum):
    NEW = "new"
    SERVING = "serving"
    DRAINING = "draining"
    TERMINATED = "terminated"


class Input(enum.Enum):
    ADD_PORT = "add_port"
    START = "start"
    STOP = "stop"
    DRAINED = "drained"


Misuse = Optional[Tuple[Type[Exception], str]]

_NO_PORT_AFTER_START = (RuntimeError, "cannot add a port once the server has started")
_STARTED = (ValueError, "the server has already been started")
_NO_RESTART = (ValueError, "a stopped server cannot be started again")

TABLE: Dict[Tuple[State, Input], Tuple[State, Misuse]] = {
    (State.NEW, Input.ADD_PORT): (State.NEW, None),
    (State.NEW, Input.START): (State.SERVING, None),
    (State.NEW, Input.STOP): (State.NEW, None),  # grpcio-compatible no-op
    (State.NEW, Input.DRAINED): (State.NEW, None),
    (State.SERVING, Input.ADD_PORT): (State.SERVING, _NO_PORT_AFTER_START),
    (State.SERVING, Input.START): (State.SERVING, _STARTED),
    (State.SERVING, Input.STOP): (State.DRAINING, None),
    (State.SERVING, Input.DRAINED): (State.SERVING, None),
    (State.DRAINING, Input.ADD_PORT): (State.DRAINING, _NO_PORT_AFTER_START),
    (State.DRAINING, Input.START): (State.DRAINING, _NO_RESTART),
    (State.DRAINING, Input.STOP): (State.DRAINING, None),  # may bring the deadline forward
    (State.DRAINING, Input.DRAINED): (State.TERMINATED, None),
    (State.TERMINATED, Input.ADD_PORT): (State.TERMINATED, _NO_PORT_AFTER_START),
    (State.TERMINATED, Input.START): (State.TERMINATED, _NO_RESTART),
    (State.TERMINATED, Input.STOP): (State.TERMINATED, None),
    (State.TERMINATED, Input.DRAINED): (State.TERMINATED, None),
}


class StopDecision(enum.Enum):
    """What a ``stop()`` asks of the I/O layer."""

    NOTHING = "nothing"  # not started, already terminated, or a later deadline
    BEGIN = "begin"  # first stop: close listeners, GOAWAY, arm the deadline
    EARLIER = "earlier"  # already draining: move the deadline forward


class Lifecycle:
    """Thread-safe holder of the state, the stop deadline and the termination event."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = State.NEW
        self._terminated = False
        self._stop_events: List[threading.Event] = []
        # One locked lock per blocked waiter, released at termination. Unlike
        # threading.Event (one Condition), woken waiters share no lock to
        # re-acquire, so 100 of them are released as fast as one.
        self._gates: List[Any] = []
        # Called once, on the thread that terminates the server, under the lock:
        # they must only hand the news on (an asyncio waiter's call_soon_threadsafe).
        self._on_terminated: List[Callable[[], None]] = []
        self.deadline: Optional[float] = None  # monotonic; -inf means "cancel now"

    @property
    def state(self) -> State:
        return self._state

    def apply(self, event: Input) -> Tuple[State, State]:
        """Apply an input; return (before, after). Raise the table's exception on misuse."""
        with self._lock:
            return self._apply_locked(event)

    def _apply_locked(self, event: Input) -> Tuple[State, State]:
        before = self._state
        after, misuse = TABLE[(before, event)]
        if misuse is not None:
            exc_type, message = misuse
            raise exc_type(message)
        self._state = after
        if after is State.TERMINATED and before is not State.TERMINATED:
            self._terminated = True
            for stop_event in self._stop_events:
                stop_event.set()
            self._stop_events.clear()
            for gate in self._gates:
                gate.release()
            self._gates.clear()
            for callback in self._on_terminated:
                callback()
            self._on_terminated.clear()
        return before, after

    def stop(self, grace: Optional[float], now: float) -> Tuple[threading.Event, StopDecision]:
        """Record a ``stop(grace)``; the earliest deadline wins, ``None`` wins over all."""
        deadline = -math.inf if grace is None else now + max(0.0, float(grace))
        done = threading.Event()
        with self._lock:
            before, after = self._apply_locked(Input.STOP)
            if after is not State.DRAINING:
                done.set()
                return done, StopDecision.NOTHING
            self._stop_events.append(done)
            if before is State.SERVING:
                self.deadline = deadline
                return done, StopDecision.BEGIN
            if self.deadline is None or deadline < self.deadline:
                self.deadline = deadline
                return done, StopDecision.EARLIER
            return done, StopDecision.NOTHING

    def wait(self, timeout: Optional[float]) -> bool:
        """Block until terminated or timeout; True if it timed out (grpcio's contract).

        Blocks with no periodic wake-ups (lifecycle.md 10): in one ``Lock.acquire``, or
        in the main thread in one wait on a socket that signals wake (lifecycle.md 11).
        """
        if self._terminated:
            return False
        if timeout is not None and timeout <= 0:
            return True
        if threading.current_thread() is threading.main_thread():
            timed_out = self._wait_woken_by_signals(timeout)
            if timed_out is not None:
                return timed_out
        gate = threading.Lock()
        gate.acquire()
        with self._lock:
            if self._terminated:
                return False
            self._gates.append(gate)
        released = False
        try:
            released = gate.acquire(True, -1 if timeout is None else timeout)
        finally:
            if not released:  # timed out or interrupted: forget the gate
                with self._lock:
                    if gate in self._gates:
                        self._gates.remove(gate)
                    else:
                        released = self._terminated
        return not released

    def _wait_woken_by_signals(self, timeout: Optional[float]) -> Optional[bool]:
        """``wait`` for the main thread: a ``recv`` on a socket that the termination
        and ``signal.set_wakeup_fd`` both write to; None where the wakeup fd is taken
        (an asyncio loop's). The kernel may hand a signal to any thread, and Python runs
        its handler (Ctrl+C's KeyboardInterrupt, puregrpc.run's drain) in the main
        thread only once that thread wakes: blocked in a lock, it never would (a
        --workers test saw a worker ignore its SIGTERM so)."""
        wake_r, wake_w = socket.socketpair()
        try:
            wake_w.setblocking(False)
            try:
                previous = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
            except (ValueError, TypeError):  # not the main interpreter's main thread after all
                return None
            if previous != -1:
                signal.set_wakeup_fd(previous)
                return None

            def wake() -> None:
                try:
                    wake_w.send(b"\0")
                except OSError:  # full: woken already
                    pass

            try:
                if not self.add_termination_callback(wake):
                    return False
                deadline = None if timeout is None else time.monotonic() + timeout
                while not self._terminated:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return True
                    # The signal handlers run as this returns (PEP 475: a KeyboardInterrupt
                    # comes out of it). A socket timeout waits in poll(), which, unlike
                    # select(), takes file descriptors past 1024 (a busy server's).
                    wake_r.settimeout(remaining)
                    try:
                        wake_r.recv(64)
                    except socket.timeout:
                        pass
                return False
            finally:
                self.remove_termination_callback(wake)
                signal.set_wakeup_fd(-1)
        finally:
            wake_r.close()
            wake_w.close()

    def add_termination_callback(self, callback: Callable[[], None]) -> bool:
        """Call ``callback()`` at termination; False (and no call) if it has happened."""
        with self._lock:
            if self._terminated:
                return False
            self._on_terminated.append(callback)
            return True

    def remove_termination_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._on_terminated:
                self._on_terminated.remove(callback)

    @property
    def terminated(self) -> bool:
        return self._terminated


def mermaid_diagram() -> str:
    """The state diagram of ``TABLE`` in Mermaid syntax (docs/lifecycle.md embeds it)."""
    lines = ["stateDiagram-v2", "    [*] --> NEW"]
    for (state, event), (after, misuse) in TABLE.items():
        if misuse is None and after is not state:
            lines.append(f"    {state.name} --> {after.name}: {event.value}")
    lines.append("    TERMINATED --> [*]")
    return "\n".join(lines)


def misuse_table() -> str:
    """The calls that raise, as a Markdown table (docs/lifecycle.md embeds it)."""
    rows = ["| state | call | raises |", "|---|---|---|"]
    for (state, event), (_, misuse) in TABLE.items():
        if misuse is not None:
            rows.append(f"| {state.name} | {event.value} | `{misuse[0].__name__}`: {misuse[1]} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(mermaid_diagram())
    print()
    print(misuse_table())
