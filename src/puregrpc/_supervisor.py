"""``puregrpc serve ... --workers N``: a supervisor keeping N worker processes on one port.

The supervisor serves no RPC and never imports the user's module. It binds every
address once per slot with SO_REUSEPORT, so the port has N listening sockets and the
kernel spreads new connections over them, and it keeps them: each worker is a fresh
interpreter running the same command line with the hidden ``--worker-fd FD`` and
``--listen-fds`` options (``sys.executable -m puregrpc serve ...``), which imports
MODULE, calls ATTR(server), serves its slot's sockets, starts, and writes
``ready PID`` on FD, its end of a socket pair with the supervisor.

Why the supervisor owns the sockets: Linux resets the connections waiting in a
listening socket's accept queue when its last holder closes it (an SO_REUSEPORT
group passes them to its other sockets only with ``net.ipv4.tcp_migrate_req``). In a
rolling restart a slot's new worker serves the same socket as the old one, which
then stops accepting and drains: the queue is never closed, so no connection that
reached it is lost. A slot whose worker dies unasked has its sockets closed (and
bound anew for the next worker), so that new connections go to the living workers
rather than wait in a queue nobody serves.

Everything happens on the supervisor's main thread, in one loop: signals arrive
through ``signal.set_wakeup_fd``, ready lines on the socket pairs, and children's
exits are collected after SIGCHLD. Workers start in a session of their own, so a
Ctrl+C in a terminal reaches the supervisor alone, which then drains them.

- A worker that exits unasked is restarted after a delay: 0.5 s, doubled after each
  exit up to 30 s, back to 0.5 s once a worker has stayed up 60 s.
- An address the supervisor cannot bind (a busy port) exits 1 before any worker
  starts. A worker that exits before its ready line while the first generation
  starts stops everything: the supervisor exits with the worker's status (a bad
  target is the same error for each worker).
- SIGTERM or SIGINT: SIGTERM to every worker (each drains as ``puregrpc.run``)
  and the supervisor closes its sockets, so the port refuses new connections once
  the workers have closed theirs; the supervisor exits 0 once all have exited. A
  second SIGTERM/SIGINT: SIGKILL to every worker, exit status 1.
- SIGHUP: a rolling restart. N new workers start (importing MODULE afresh); once
  every one has said ready, the old ones get SIGTERM and drain. If a new worker
  exits or is not ready within ``BOOT_TIMEOUT``, the new generation is stopped and
  the old one keeps serving.
- If the supervisor dies, even by SIGKILL, each worker's end of the socket pair
  reads end-of-file and the worker drains on its own.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from ._addresses import bind

_LOGGER = logging.getLogger("puregrpc.supervisor")

FIRST_DELAY = 0.5  # seconds before restarting a worker that exited
MAX_DELAY = 30.0
STABLE_AFTER = 60.0  # a worker up this long resets the delay
BOOT_TIMEOUT = 120.0  # a worker must say ready within this (importing a big module takes time)
WORKER_ENV = "PUREGRPC_WORKER"  # each worker's slot, 0 to N-1, in its environment

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_reason(returncode: int) -> str:
    """``exited with status 3`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


class Worker:
    """One worker process and the supervisor's end of its socket pair."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, slot: int, generation: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.sock: Optional[socket.socket] = sock
        self.slot = slot
        self.generation = generation
        self.started = time.monotonic()
        self.ready_at: Optional[float] = None
        self.stopping = False  # the supervisor sent SIGTERM (or SIGKILL): its exit is expected
        self.boot_timed_out = False
        self.buffer = b""


class Slot:
    """One of the N places a worker fills; it keeps the restart delay."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.worker: Optional[Worker] = None
        self.failures = 0
        self.restart_at: Optional[float] = None
        # The slot's listening sockets, one group per address; None once closed.
        self.listeners: Optional[List[List[socket.socket]]] = None

    def schedule_restart(self, now: float) -> float:
        """Restart this slot after the current delay, which then doubles; the delay."""
        # The exponent is capped: 2.0 ** 1024 overflows, after some 9 hours of a slot
        # dying every 30 s.
        delay = min(MAX_DELAY, FIRST_DELAY * 2.0 ** min(self.failures, 32))
        self.failures += 1
        self.restart_at = now + delay
        return delay

    def close_listeners(self) -> None:
        for group in self.listeners or []:
            for sock in group:
                sock.close()
        self.listeners = None


class Supervisor:
    def __init__(self, worker_argv: List[str], count: int, target: str, addresses: List[str]) -> None:
        self.worker_argv = worker_argv
        self.target = target
        self.addresses = addresses
        self.slots = [Slot(i) for i in range(count)]
        self.workers: Dict[int, Worker] = {}  # every living worker, by pid
        self.generation = 0
        self.booting = True  # the first generation has not all said ready yet
        self.rolling: Optional[List[Worker]] = None  # the new generation of a rolling restart
        self.stopping = False
        self.forced = False
        self.exit_code = 0
        self.pending_signals: List[int] = []
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()

    # -- workers -------------------------------------------------------------------
    def open_listeners(self, slot: Slot) -> None:
        """Bind the slot's sockets unless it has them; RuntimeError naming the address."""
        if slot.listeners is None:
            groups: List[List[socket.socket]] = []
            try:
                for address in self.addresses:
                    groups.append(bind(address, reuse_port=True)[0])
            except RuntimeError:
                for group in groups:
                    for sock in group:
                        sock.close()
                raise
            slot.listeners = groups

    def spawn(self, slot: int, generation: int) -> Worker:
        listeners = self.slots[slot].listeners
        assert listeners is not None
        groups = [[sock.fileno() for sock in group] for group in listeners]
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "puregrpc", *self.worker_argv, "--worker-fd", str(theirs.fileno())]
        argv += ["--listen-fds", ";".join(",".join(map(str, group)) for group in groups)]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(), *(fd for group in groups for fd in group)),
                start_new_session=True,  # a terminal's Ctrl+C reaches the supervisor only
                env={**os.environ, WORKER_ENV: str(slot)},
            )
        finally:
            theirs.close()
        worker = Worker(proc, ours, slot, generation)
        self.workers[worker.pid] = worker
        self.selector.register(ours, selectors.EVENT_READ, worker)
        _LOGGER.info("started worker %d (slot %d)", worker.pid, slot)
        return worker

    def signal_worker(self, worker: Worker, signum: int) -> None:
        worker.stopping = True
        try:
            os.kill(worker.pid, signum)
        except ProcessLookupError:  # exited already; reaped on the next turn
            pass

    def close_socket(self, worker: Worker) -> None:
        if worker.sock is not None:
            self.selector.unregister(worker.sock)
            worker.sock.close()
            worker.sock = None

    def on_readable(self, worker: Worker) -> None:
        assert worker.sock is not None
        try:
            data = worker.sock.recv(256)
        except OSError:
            data = b""
        if not data:  # the worker is exiting: its exit is handled when it is reaped
            self.close_socket(worker)
            return
        worker.buffer += data
        if worker.ready_at is None and b"\n" in worker.buffer:
            worker.ready_at = time.monotonic()
            self.on_ready(worker)

    def on_ready(self, worker: Worker) -> None:
        took = worker.ready_at - worker.started if worker.ready_at is not None else 0.0
        _LOGGER.info("worker %d (slot %d) ready in %.2fs", worker.pid, worker.slot, took)
        if self.stopping:
            return
        if self.booting and all(s.worker is not None and s.worker.ready_at is not None for s in self.slots):
            self.booting = False
            _LOGGER.info(
                "serving %s on %s with %d workers (supervisor pid %d): SIGTERM/SIGINT drains, SIGHUP replaces them",
                self.target,
                ", ".join(self.addresses),
                len(self.slots),
                os.getpid(),
            )
        if self.rolling is not None and all(w.ready_at is not None for w in self.rolling):
            self.finish_roll()

    # -- rolling restart -----------------------------------------------------------
    def start_roll(self) -> None:
        if self.stopping or self.booting or self.rolling is not None:
            what = "stopping" if self.stopping else "starting" if self.booting else "already restarting"
            _LOGGER.warning("SIGHUP ignored: %s", what)
            return
        try:
            for slot in self.slots:
                self.open_listeners(slot)  # a slot whose worker died has none
        except RuntimeError as exc:
            _LOGGER.error("SIGHUP ignored: %s", exc)
            return
        self.generation += 1
        _LOGGER.info("SIGHUP received: starting %d new workers (generation %d)", len(self.slots), self.generation)
        for slot in self.slots:
            slot.restart_at = None  # a slot waiting for its restart gets the new worker
        self.rolling = [self.spawn(slot.index, self.generation) for slot in self.slots]

    def finish_roll(self) -> None:
        assert self.rolling is not None
        old: List[Worker] = []
        for new in self.rolling:
            slot = self.slots[new.slot]
            if slot.worker is not None and slot.worker.pid in self.workers:
                old.append(slot.worker)
            slot.worker = new
            slot.restart_at = None
            slot.failures = 0
        self.rolling = None
        _LOGGER.info(
            "rolling restart: new workers %s ready; draining old workers %s",
            " ".join(str(w.pid) for w in (s.worker for s in self.slots) if w is not None),
            " ".join(str(w.pid) for w in old) or "(none)",
        )
        for worker in old:
            self.signal_worker(worker, signal.SIGTERM)

    def abandon_roll(self, why: str) -> None:
        assert self.rolling is not None
        _LOGGER.error("rolling restart abandoned: %s; the old workers keep serving", why)
        for worker in self.rolling:
            if worker.pid in self.workers:
                self.signal_worker(worker, signal.SIGTERM)
        self.rolling = None
        for slot in self.slots:
            if slot.worker is None:  # its worker had died before the restart: restart it now
                slot.restart_at = time.monotonic()

    # -- exits -----------------------------------------------------------------------
    def reap(self) -> None:
        for worker in list(self.workers.values()):
            code = worker.proc.poll()
            if code is None:
                continue
            del self.workers[worker.pid]
            self.close_socket(worker)
            self.on_exit(worker, code)

    def on_exit(self, worker: Worker, code: int) -> None:
        reason = f"not ready within {BOOT_TIMEOUT:g}s, killed" if worker.boot_timed_out else exit_reason(code)
        if worker.stopping and not worker.boot_timed_out:
            _LOGGER.info("worker %d (slot %d) %s", worker.pid, worker.slot, reason)
            return
        if self.stopping:
            _LOGGER.warning("worker %d (slot %d) %s", worker.pid, worker.slot, reason)
            return
        if self.rolling is not None and worker in self.rolling:
            self.abandon_roll(f"new worker {worker.pid} {reason}")
            return
        if self.booting and worker.ready_at is None:
            _LOGGER.error("worker %d %s before it was ready: stopping", worker.pid, reason)
            self.exit_code = code if code > 0 else 1
            self.begin_stop()
            return
        slot = self.slots[worker.slot]
        if slot.worker is not worker:  # an old worker left over; its slot has a newer one
            _LOGGER.warning("worker %d (slot %d) %s", worker.pid, worker.slot, reason)
            return
        slot.worker = None
        if self.rolling is not None and any(new.slot == slot.index for new in self.rolling):
            _LOGGER.warning(
                "worker %d (slot %d) %s; the rolling restart's worker takes its place", worker.pid, worker.slot, reason
            )
            return  # finish_roll fills the slot (abandon_roll restarts it)
        if not any(other.slot == slot.index for other in self.workers.values()):
            slot.close_listeners()  # new connections go to the living workers meanwhile
        now = time.monotonic()
        if worker.ready_at is not None and now - worker.ready_at >= STABLE_AFTER:
            slot.failures = 0
        delay = slot.schedule_restart(now)
        _LOGGER.warning(
            "worker %d (slot %d) %s after %.1fs; restarting it in %gs",
            worker.pid,
            worker.slot,
            reason,
            now - worker.started,
            delay,
        )

    def restart_due(self) -> None:
        if self.stopping:
            return
        now = time.monotonic()
        for slot in self.slots:
            if slot.worker is None and slot.restart_at is not None and slot.restart_at <= now:
                slot.restart_at = None
                try:
                    self.open_listeners(slot)
                except RuntimeError as exc:
                    delay = slot.schedule_restart(now)
                    _LOGGER.error("slot %d: %s; trying again in %gs", slot.index, exc, delay)
                    continue
                slot.worker = self.spawn(slot.index, self.generation)

    def check_boot_timeouts(self) -> None:
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.ready_at is None and not worker.stopping and now - worker.started > BOOT_TIMEOUT:
                worker.boot_timed_out = True
                self.signal_worker(worker, signal.SIGKILL)

    # -- signals -------------------------------------------------------------------
    def begin_stop(self) -> None:
        self.stopping = True
        for slot in self.slots:
            slot.restart_at = None
            slot.close_listeners()  # the workers' copies close as they drain
        self.rolling = None
        for worker in self.workers.values():
            if not worker.stopping:
                self.signal_worker(worker, signal.SIGTERM)

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGHUP:
            self.start_roll()
        elif signum in _STOP_SIGNALS:
            if not self.stopping:
                _LOGGER.info("%s received: draining %d workers; send it again to kill them", name, len(self.workers))
                self.begin_stop()
            elif not self.forced:
                _LOGGER.warning("%s received again: killing %d workers", name, len(self.workers))
                self.forced = True
                for worker in self.workers.values():
                    self.signal_worker(worker, signal.SIGKILL)

    def _handler(self, signum: int, frame: Any) -> None:
        self.pending_signals.append(signum)

    # -- the loop ------------------------------------------------------------------
    def next_timeout(self) -> float:
        timeout = 1.0  # boot timeouts are checked at least this often
        now = time.monotonic()
        for slot in self.slots:
            if slot.restart_at is not None:
                timeout = min(timeout, max(0.0, slot.restart_at - now))
        return timeout

    def run(self) -> int:
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.selector.register(self.wake_r, selectors.EVENT_READ, None)
        handled = (*_STOP_SIGNALS, signal.SIGHUP, signal.SIGCHLD)
        previous: Dict[int, Any] = {}
        old_wakeup = signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        try:
            for handled_signal in handled:
                previous[int(handled_signal)] = signal.signal(handled_signal, self._handler)
            try:
                for slot in self.slots:
                    self.open_listeners(slot)
            except RuntimeError as exc:  # a busy port, no permission: as a single server, status 1
                _LOGGER.error("%s", exc)
                return 1
            for slot in self.slots:
                slot.worker = self.spawn(slot.index, self.generation)
            while True:
                while self.pending_signals:
                    received = self.pending_signals.pop(0)
                    if received != signal.SIGCHLD:
                        self.on_signal(received)
                self.reap()
                if self.stopping and not self.workers:
                    break
                self.restart_due()
                self.check_boot_timeouts()
                for key, _ in self.selector.select(self.next_timeout()):
                    if key.data is None:
                        try:
                            while self.wake_r.recv(512):
                                pass
                        except BlockingIOError:
                            pass
                    else:
                        self.on_readable(key.data)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(old_wakeup)
            for worker in list(self.workers.values()):  # only after an error of ours
                self.signal_worker(worker, signal.SIGKILL)
                worker.proc.wait()
            for slot in self.slots:
                slot.close_listeners()
            self.selector.close()
            self.wake_r.close()
            self.wake_w.close()
        if self.forced:
            _LOGGER.warning("workers killed; exiting with status 1")
            return 1
        _LOGGER.info("every worker has exited")
        return self.exit_code


def supervise(arguments: List[str], count: int, *, target: str, addresses: List[str]) -> int:
    """Run ``count`` workers of ``puregrpc <arguments>`` until SIGTERM/SIGINT; the exit status."""
    return Supervisor(arguments, count, target, addresses).run()
