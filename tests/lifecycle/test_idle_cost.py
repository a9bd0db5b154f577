"""Idle cost of a waiting server (lifecycle.md 10), measured for real.

(a) The thread blocked in ``wait_for_termination()`` wakes at most twice in 10 s:
    its context switches (voluntary + involuntary, /proc/<pid>/task/<tid>/status)
    are counted over 10 s. A thread that polls (grpcio wakes 10 times a second)
    shows one switch per wake-up.
(b) The whole idle process (one waiter, no RPCs) makes under 5 blocking syscalls
    a second: it runs under ``strace -f -ttt`` and the syscalls that begin in a
    5 s window, on any thread, are counted.
"""

from __future__ import annotations

import collections
import os
import pathlib
import re
import shutil
import signal
import sys
import time
from typing import Counter, Dict, List, Tuple

import pytest

from ._proc import SCRIPTS, ServerProcess

WAKE_WINDOW = 10.0
MAX_WAKEUPS = 2
SYSCALL_WINDOW = 5.0
MAX_BLOCKING_PER_SECOND = 5.0

# Syscalls that can put the calling thread to sleep.
BLOCKING = {
    "futex",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "nanosleep",
    "clock_nanosleep",
    "read",
    "readv",
    "recvfrom",
    "recvmsg",
    "accept",
    "accept4",
    "wait4",
    "waitid",
    "pause",
    "rt_sigtimedwait",
    "rt_sigsuspend",
    "sched_yield",
}


def _switches(pid: int, tid: int) -> int:
    status = pathlib.Path(f"/proc/{pid}/task/{tid}/status").read_text()
    fields: Dict[str, int] = {}
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name.endswith("ctxt_switches"):
            fields[name] = int(value)
    return fields["voluntary_ctxt_switches"] + fields["nonvoluntary_ctxt_switches"]


def test_waiting_thread_wakes_at_most_twice_in_10s() -> None:
    if not pathlib.Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux /proc per-thread counters")
    with ServerProcess.script("wait_server.py") as server:
        _, tid = server.ready()
        server.wait_blocked(tid)
        before = _switches(server.pid, tid)
        assert server.wait_exit(WAKE_WINDOW) is None, server.describe()
        wakeups = _switches(server.pid, tid) - before
    print(f"\nwaiting thread: {wakeups} context switches in {WAKE_WINDOW:g} s")
    assert wakeups <= MAX_WAKEUPS, (
        f"the thread in wait_for_termination() woke {wakeups} times in {WAKE_WINDOW:g} s (spec: at most {MAX_WAKEUPS})"
    )


_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+)\s+(?:<\.\.\.\s+)?([a-z_0-9]+)(\(| resumed>)")


def _syscalls_in(trace: pathlib.Path, start: float, end: float) -> List[Tuple[int, str]]:
    """(tid, name) of every syscall that *began* between ``start`` and ``end``."""
    found = []
    for line in trace.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if not match or match.group(4) != "(":  # skip "<... x resumed>", signals, exits
            continue
        if start <= float(match.group(2)) <= end:
            found.append((int(match.group(1)), match.group(3)))
    return found


def test_idle_process_makes_under_5_blocking_syscalls_per_second(tmp_path: pathlib.Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs it): cannot count syscalls")
    trace = tmp_path / "strace.txt"
    argv = [strace, "-f", "-ttt", "-o", str(trace), sys.executable, str(SCRIPTS / "wait_server.py")]
    with ServerProcess(argv) as server:
        try:
            _, tid = server.ready()
        except AssertionError:
            if any("ptrace" in line or "Operation not permitted" in line for line in server.stderr_lines):
                pytest.skip(f"strace cannot trace here: {server.stderr_lines[-1:]}")
            raise
        server.wait_blocked(tid)
        start = time.time()  # strace -ttt stamps wall-clock time
        assert server.wait_exit(SYSCALL_WINDOW) is None, server.describe()
        end = time.time()
        os.kill(tid, signal.SIGKILL)  # the traced interpreter (its main thread's id is its pid)
        assert server.wait_exit(10.0) is not None
    calls = _syscalls_in(trace, start, end)
    seconds = end - start
    blocking = [call for call in calls if call[1] in BLOCKING]
    by_name: Counter[str] = collections.Counter(name for _, name in calls)
    print(
        f"\nidle process: {len(blocking) / seconds:.2f} blocking syscalls/s "
        f"({len(calls) / seconds:.2f}/s in all) over {seconds:.1f} s: {dict(by_name)}"
    )
    assert len(blocking) / seconds < MAX_BLOCKING_PER_SECOND, (
        f"{len(blocking)} blocking syscalls in {seconds:.1f} s: {dict(by_name)}"
    )
