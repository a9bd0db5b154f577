"""What the load-balancer tests share: replica processes, proxy processes, a client load loop.

Every process is a real one (a puregrpc replica from ``replica.py``, Envoy, nginx) with
piped output read by threads; every wait has a deadline, and a process that ends or
misses a deadline fails the test with its last output lines.
"""

from __future__ import annotations

import collections
import os
import pathlib
import queue
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from typing import IO, Any, Counter, Dict, List, Optional, Sequence, Tuple

import grpc

HERE = pathlib.Path(__file__).parent
SERVICE = "lb.Replica"
STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it; it is released at once,
    so a proxy or replica can bind it; another process taking it meanwhile is unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render(template: str, out: pathlib.Path, **values: Any) -> pathlib.Path:
    """``HERE/template`` with ``$name`` placeholders filled in, written to ``out``."""
    text = string.Template((HERE / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    out.write_text(text)
    return out


class Process:
    """A child process with stdout and stderr read line by line into queues."""

    def __init__(self, argv: Sequence[str], name: str) -> None:
        self.name = name
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a Ctrl+C of pytest is not also sent to the children
        )
        self.pid = self.proc.pid
        self.lines: queue.Queue[Optional[Tuple[float, str]]] = queue.Queue()
        self.stdout_lines: List[str] = []
        self.stderr_lines: List[str] = []
        self.exited = threading.Event()
        self.exit_time = 0.0
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.stdout_lines, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.stderr_lines, False), daemon=True),
            threading.Thread(target=self._reap, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, pipe: IO[str], log: List[str], queued: bool) -> None:
        for line in pipe:
            log.append(line.rstrip("\n"))
            if queued:
                self.lines.put((time.monotonic(), line.rstrip("\n")))
        if queued:
            self.lines.put(None)

    def _reap(self) -> None:
        self.proc.wait()
        self.exit_time = time.monotonic()
        self.exited.set()

    def expect(self, prefix: str, timeout: float = STARTUP_TIMEOUT) -> Tuple[float, str]:
        """The next stdout line starting with ``prefix`` and its arrival time (earlier lines skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.name}: no {prefix!r} line within {timeout}s; {self.describe()}") from None
            if item is None:
                raise AssertionError(f"{self.name}: stdout closed before a {prefix!r} line; {self.describe()}")
            if item[1].startswith(prefix):
                return item

    def signal(self, signum: int = signal.SIGTERM) -> float:
        """Send ``signum``; return the monotonic time just before sending it."""
        sent = time.monotonic()
        os.kill(self.pid, signum)
        return sent

    def wait_exit(self, timeout: float) -> int:
        if not self.exited.wait(timeout):
            raise AssertionError(f"{self.name}: still running {timeout}s later; {self.describe()}")
        code = self.proc.returncode
        assert code is not None
        return code

    def describe(self) -> str:
        out = "\n".join(self.stdout_lines[-20:])
        err = "\n".join(self.stderr_lines[-40:])
        return f"argv={self.argv} returncode={self.proc.poll()}\n--- stdout:\n{out}\n--- stderr:\n{err}"

    def close(self) -> None:
        """Kill the process and its process group (nginx's workers are children of its master)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own group: start_new_session=True
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        for thread in self._threads:
            thread.join(5)
        if any(thread.is_alive() for thread in self._threads):
            return  # a pipe still held open elsewhere: closing it would block on its reader
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


class Replica(Process):
    """``replica.py`` serving ``lb.Replica`` as ``name`` on ``port``; started and READY."""

    def __init__(
        self,
        name: str,
        port: int,
        *,
        drain_delay: float = 0.0,
        grace: float = 5.0,
        options: Sequence[Tuple[str, int]] = (),
    ) -> None:
        argv = [sys.executable, str(HERE / "replica.py"), "--port", str(port), "--name", name]
        argv += ["--drain-delay", str(drain_delay), "--grace", str(grace)]
        for option, value in options:
            argv += ["--option", f"{option}={value}"]
        super().__init__(argv, f"replica {name}")
        self.port = port
        try:
            self.ready_time, line = self.expect("READY")
            assert int(line.split()[1]) == port, line
        except BaseException:
            self.close()
            raise


def wait_listening(port: int, proc: Process, timeout: float = STARTUP_TIMEOUT) -> None:
    """Return once something accepts TCP connections on ``port``; fail if ``proc`` ends first.

    A poll (every 20 ms): neither Envoy nor nginx says on a pipe when a listener is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.exited.is_set():
            raise AssertionError(f"{proc.name} exited before listening on {port}; {proc.describe()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"{proc.name}: nothing listens on {port} after {timeout}s; {proc.describe()}")


# -- the grpcio client ---------------------------------------------------------------


class Outcome:
    __slots__ = ("code", "details", "ended", "replica", "started")

    def __init__(self, started: float, ended: float, replica: str, code: grpc.StatusCode, details: str) -> None:
        self.started = started
        self.ended = ended
        self.replica = replica
        self.code = code
        self.details = details

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK

    def __repr__(self) -> str:
        return f"Outcome({self.replica or self.code.name} {self.details!r} at {self.ended:.3f})"


class Load:
    """``Whoami`` called back to back through ``channel`` from ``threads`` threads.

    Every call's outcome is kept: which replica answered, or the status code of a failure.
    """

    def __init__(self, channel: grpc.Channel, threads: int = 2, timeout: float = 10.0) -> None:
        self._call = channel.unary_unary(f"/{SERVICE}/Whoami")
        self._timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.outcomes: List[Outcome] = []
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self._timeout + 5)
            assert not thread.is_alive(), "a load thread is stuck in a call past its deadline"

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                answer: bytes = self._call(b"", timeout=self._timeout)
                outcome = Outcome(started, time.monotonic(), answer.decode(), grpc.StatusCode.OK, "")
            except grpc.RpcError as err:
                outcome = Outcome(started, time.monotonic(), "", err.code(), str(err.details()))
            with self._lock:
                self.outcomes.append(outcome)

    def snapshot(self) -> List[Outcome]:
        with self._lock:
            return list(self.outcomes)

    def failures(self) -> List[Outcome]:
        return [o for o in self.snapshot() if o.code is not grpc.StatusCode.OK]

    def by_replica(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        """Answers per replica among calls that started at or after ``since`` and ended before ``until``."""
        return collections.Counter(
            o.replica for o in self.snapshot() if o.ok and since <= o.started and o.ended < until
        )

    def wait_for(self, replicas: Sequence[str], timeout: float, since: float = 0.0) -> Counter[str]:
        """Wait until each of ``replicas`` has answered a call started after ``since``.

        A poll of the outcome list (every 50 ms) with a deadline."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.by_replica(since)
            if all(seen[name] for name in replicas):
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"not all of {list(replicas)} answered within {timeout}s: {dict(seen)}")
            time.sleep(0.05)


def summary(counts: Dict[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
