"""bench/soak.py --quick: about 15 s of unary calls and streamed messages (with aborts,
deadlines, cancellations, and clients that reset their connection mid-stream, each
followed by a new connection that must be answered) against a puregrpc server in a
subprocess: sync (``puregrpc.server``) and asyncio (``puregrpc.aio.server``), and the sync
one over TLS. It exits non-zero if any call ends unexpectedly, if the server's RSS,
threads or file descriptors grow after warm-up, or if its counters, threads, tasks and
descriptors are not back where they started at the end. The server runs on uvloop where
it is installed (the uvloop run of scripts/test), which the summary must confirm."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

SOAK = pathlib.Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.parametrize(
    ("server", "tls"),
    # One TLS run: the TLS transport (asyncio's, uvloop's) is the connection layer both
    # servers share.
    [("sync", False), ("aio", False), ("sync", True)],
    ids=["sync", "aio", "sync-tls"],
)
def test_soak_quick(tmp_path: pathlib.Path, server: str, tls: bool) -> None:
    if tls:
        pytest.importorskip("trustme")
    report = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, str(SOAK), "--quick", "--server", server, "--json", str(report)] + (["--tls"] if tls else []),
        capture_output=True,
        text=True,
        timeout=180,
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(report.read_text())["summary"]
    assert summary["failures"] == []
    assert summary["server"] == server and summary["tls"] == tls
    expected_loop = os.environ.get("PUREGRPC_EXPECT_LOOP") or (
        "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    )
    assert summary["loop"] == expected_loop
    assert summary["unary"] > 0 and summary["streamed_messages_received"] > 0
    outcomes = summary["outcomes"]
    for kind in ("ok", "abort", "deadline", "cancel", "reset"):
        assert outcomes.get(kind, 0) > 0, outcomes
    assert summary["end"]["rpcs_in_flight"] == 0 and summary["end"]["connections"] == 0
    assert summary["end"]["tasks"] <= summary["before"]["tasks"]
