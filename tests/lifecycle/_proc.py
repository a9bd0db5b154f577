"""Run a lifecycle server script in a subprocess; read its lines, signal it, time its exit.

Lines are read by a thread per pipe into a queue, each stamped with the
``time.monotonic()`` of its arrival, so a test blocks on the pipe (never a
sleep loop) and can compare arrival times with the moment it sent a signal.
The exit time is taken by a thread blocked in ``waitpid``.
"""

from __future__ import annotations

import ctypes
import os
import pathlib
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any, Callable, List, Optional, Sequence, Tuple

import grpc

SCRIPTS = pathlib.Path(__file__).parent / "scripts"
SERVICE = "lifecycle.Test"
STARTUP_TIMEOUT = 30.0

Line = Tuple[float, str]
# tgkill(2), to signal one thread of another process: its number where we know it.
_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}
CAN_SIGNAL_A_THREAD = sys.platform.startswith("linux") and os.uname().machine in _SYS_TGKILL


class ServerProcess:
    """A script from ``scripts/`` (or any argv) with piped stdout and stderr."""

    def __init__(self, argv: Sequence[str], *, stdin: bool = False) -> None:
        self.argv = list(argv)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.pid = self.proc.pid
        self.stdout: queue.Queue[Optional[Line]] = queue.Queue()
        self.stderr: queue.Queue[Optional[Line]] = queue.Queue()
        self.stdout_lines: List[str] = []
        self.stderr_lines: List[str] = []
        self.exited = threading.Event()
        self.exit_time = 0.0
        self.returncode: Optional[int] = None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(
                target=self._read,
                args=(self.proc.stdout, self.stdout, self.stdout_lines),
                daemon=True,
            ),
            threading.Thread(
                target=self._read,
                args=(self.proc.stderr, self.stderr, self.stderr_lines),
                daemon=True,
            ),
            threading.Thread(target=self._reap, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @classmethod
    def script(cls, name: str, *args: str, stdin: bool = False) -> ServerProcess:
        return cls([sys.executable, str(SCRIPTS / name), *args], stdin=stdin)

    def _read(self, pipe: IO[str], lines: queue.Queue[Optional[Line]], log: List[str]) -> None:
        for line in pipe:
            log.append(line.rstrip("\n"))
            lines.put((time.monotonic(), line.rstrip("\n")))
        lines.put(None)

    def _reap(self) -> None:
        self.returncode = self.proc.wait()
        self.exit_time = time.monotonic()
        self.exited.set()

    # -- reading -------------------------------------------------------------------
    def expect(self, prefix: str, timeout: float = STARTUP_TIMEOUT, *, stream: str = "stdout") -> Line:
        """The next line on ``stream`` starting with ``prefix`` (earlier lines are skipped)."""
        lines = self.stdout if stream == "stdout" else self.stderr
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                item = lines.get(timeout=max(0.0, remaining))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line on {stream} within {timeout}s; {self.describe()}") from None
            if item is None:
                raise AssertionError(f"{stream} closed before a {prefix!r} line; {self.describe()}")
            if item[1].startswith(prefix):
                return item

    def ready(self) -> Tuple[int, int]:
        """Wait for ``READY <port> <tid>``; return (port, tid)."""
        _, line = self.expect("READY")
        words = line.split()
        return int(words[1]), int(words[2])

    def wait_blocked(self, tid: int, timeout: float = 5.0) -> None:
        """Return once thread ``tid`` sleeps in the kernel in the same system call for
        10 ms in a row (the main thread has entered ``wait_for_termination``, a futex,
        or ``puregrpc.run``'s wait, a recv; a signal sent before that would interrupt
        the script's own start-up).

        The one poll of this suite: there is no pipe to say "now blocked"."""
        task = pathlib.Path(f"/proc/{tid}/task/{tid}")  # any thread, even under strace
        deadline = time.monotonic() + timeout
        last, same = "", 0
        while time.monotonic() < deadline:
            try:
                wchan = (task / "wchan").read_text()
                syscall = (task / "syscall").read_text()
            except OSError:
                break
            if wchan.strip() not in ("", "0") and syscall == last and not syscall.startswith("running"):
                same += 1
                if same >= 5:
                    return
            else:
                same = 0
            last = syscall
            time.sleep(0.002)
        raise AssertionError(f"thread {tid} did not block within {timeout}s; {self.describe()}")

    def describe(self) -> str:
        out = "\n".join(self.stdout_lines[-20:])
        err = "\n".join(self.stderr_lines[-30:])
        head = f"argv={self.argv} returncode={self.proc.poll()}"
        return f"{head}\n--- stdout:\n{out}\n--- stderr:\n{err}"

    # -- signals and exit ----------------------------------------------------------
    def kill(self, signum: int = signal.SIGINT) -> float:
        """Send ``signum``; return the monotonic time just before sending it."""
        sent = time.monotonic()
        os.kill(self.pid, signum)
        return sent

    def kill_another_thread(self, signum: int) -> float:
        """Send ``signum`` to the process's oldest thread other than the main one (the
        server's I/O thread: handler threads come and go, and a signal sent to a thread
        that exits is lost), as the kernel may do with a signal sent to the process;
        the time, as ``kill``."""
        others = [int(tid) for tid in os.listdir(f"/proc/{self.pid}/task") if int(tid) != self.pid]
        assert others, "the process has no thread but its main one"
        libc = ctypes.CDLL(None, use_errno=True)
        sent = time.monotonic()
        if libc.syscall(_SYS_TGKILL[os.uname().machine], self.pid, min(others), signum) != 0:
            raise OSError(ctypes.get_errno(), "tgkill failed")
        return sent

    def wait_exit(self, timeout: float) -> Optional[int]:
        """The exit code, or None if the process is still running after ``timeout``."""
        if not self.exited.wait(timeout):
            return None
        return self.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- the grpcio client -------------------------------------------------------------


class Rpc:
    """A unary call of ``lifecycle.Test/<method>`` with raw bytes, started at once.

    ``started`` and ``ended`` are monotonic times; ``ended`` is stamped by a done
    callback, so it is the moment grpcio learnt the outcome, whenever it is read.
    """

    def __init__(self, channel: grpc.Channel, method: str, request: bytes, timeout: float = 15.0) -> None:
        self._done = threading.Event()
        self.ended = 0.0
        self.started = time.monotonic()
        self.future = channel.unary_unary(f"/{SERVICE}/{method}").future(request, timeout=timeout)
        self.future.add_done_callback(self._stamp)

    def _stamp(self, _future: Any) -> None:
        self.ended = time.monotonic()
        self._done.set()

    def code(self, timeout: float = 20.0) -> grpc.StatusCode:
        """The status code (waits for the end)."""
        if not self._done.wait(timeout):
            raise AssertionError(f"the RPC did not end within {timeout}s")
        try:
            self.future.result(timeout=0)
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    def details(self) -> str:
        exc = self.future.exception(timeout=0)
        return "" if exc is None else str(exc.details())


def best_of(tries: int, margin: float, measure: Callable[[], float]) -> List[float]:
    """Run ``measure()`` until one figure is under ``margin``, at most ``tries`` times;
    return every figure. On a shared, loaded machine one run can lose the CPU for
    longer than a 200 ms margin; a real regression fails every try."""
    figures: List[float] = []
    for _ in range(tries):
        figures.append(measure())
        if figures[-1] < margin:
            break
    return figures


def new_channel(port: int) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{port}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"
