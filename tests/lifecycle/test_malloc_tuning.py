"""``puregrpc serve`` tunes glibc's allocator so that large messages do not page-fault
(see puregrpc/_malloc.py): the server's minor page faults per MiB streamed, measured
from /proc with and without the tuning (PUREGRPC_MALLOC_TUNING=0)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import grpc
import pytest

from ._proc import SCRIPTS, ServerProcess
from .test_serve_command import _startup

MESSAGES = 64

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc: Linux")


def _minor_faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])  # field 10, minflt


def _faults_per_mib(monkeypatch: Any, tuning: bool) -> float:
    monkeypatch.setenv("PYTHONPATH", str(SCRIPTS))
    monkeypatch.setenv("PUREGRPC_MALLOC_TUNING", "1" if tuning else "0")
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    with ServerProcess([sys.executable, "-m", "puregrpc", "serve", "big_stream:register", "--port", "0"]) as server:
        _, addresses = _startup(server)
        options = [("grpc.max_receive_message_length", 2 << 20)]
        with grpc.insecure_channel(f"127.0.0.1:{addresses[0][1]}", options=options) as channel:
            big = channel.unary_stream("/big.Stream/Big")
            assert sum(len(m) for m in big(b"8", timeout=30)) == 8 << 20  # warm-up
            before = _minor_faults(server.pid)
            received = sum(len(m) for m in big(str(MESSAGES).encode(), timeout=60))
            after = _minor_faults(server.pid)
        assert received == MESSAGES << 20
        server.kill(signal.SIGTERM)
        assert server.wait_exit(10.0) == 0, server.describe()
    return (after - before) / MESSAGES


def test_serve_streams_large_messages_without_page_fault_churn(monkeypatch: Any) -> None:
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("no /proc")
    tuned = _faults_per_mib(monkeypatch, tuning=True)
    untuned = _faults_per_mib(monkeypatch, tuning=False)
    print(f"\nminor page faults per MiB streamed: {tuned:.0f} tuned, {untuned:.0f} with glibc's defaults")
    # A MiB is 256 pages: faulting each buffer in anew costs hundreds per MiB.
    assert tuned < 32, tuned
