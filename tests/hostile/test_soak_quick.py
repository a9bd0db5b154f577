"""bench/soak.py --quick: about 15 s of unary calls, streamed messages and
client-streaming uploads (with aborts, deadlines, cancellations, and clients that reset
their connection mid-stream, each followed by a new connection that must be answered)
against a puregrpc server in a subprocess: sync (``puregrpc.server``); asyncio
(``puregrpc.aio.server``) with every connection drained after about 0.5 s
(grpc.max_connection_age_ms: GOAWAY, and the grpcio clients must notice nothing); and the
sync one over TLS, with gzip both ways. It exits non-zero if any call ends unexpectedly,
if the server's RSS, threads or file descriptors grow after warm-up, or if its counters,
threads, tasks and descriptors are not back where they started at the end. The server
runs on uvloop where it is installed (the uvloop run of scripts/test), which the summary
must confirm."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
from typing import Optional

import pytest

SOAK = pathlib.Path(__file__).resolve().parents[2] / "bench" / "soak.py"


@pytest.mark.parametrize(
    ("server", "tls", "age"),
    # One TLS run (with gzip): the TLS transport (asyncio's, uvloop's) and the message
    # codec are layers both servers share. Connection age (a draining server) in the aio
    # run: the drain is the same code for both.
    [("sync", False, None), ("aio", False, 0.5), ("sync", True, None)],
    ids=["sync", "aio-age", "sync-tls-gzip"],
)
def test_soak_quick(tmp_path: pathlib.Path, server: str, tls: bool, age: Optional[float]) -> None:
    if tls:
        pytest.importorskip("trustme")
    report = tmp_path / "soak.json"
    extra = (["--tls", "--gzip"] if tls else []) + (["--max-connection-age", str(age)] if age else [])
    done = subprocess.run(
        [sys.executable, str(SOAK), "--quick", "--server", server, "--json", str(report), *extra],
        capture_output=True,
        text=True,
        timeout=180,
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(report.read_text())["summary"]
    assert summary["failures"] == []
    assert summary["server"] == server and summary["tls"] == tls and summary["gzip"] == tls
    expected_loop = os.environ.get("PUREGRPC_EXPECT_LOOP") or (
        "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    )
    assert summary["loop"] == expected_loop
    assert summary["unary"] > 0 and summary["streamed_messages_received"] > 0
    outcomes = summary["outcomes"]
    for kind in ("ok", "large", "abort", "deadline", "cancel", "reset", "upload", "upload-cancel"):
        assert outcomes.get(kind, 0) > 0, outcomes
    assert summary["end"]["rpcs_in_flight"] == 0 and summary["end"]["connections"] == 0
    assert summary["end"]["tasks"] <= summary["before"]["tasks"]
    uploaded_mib = outcomes["upload"] * 20 * 64 / 1024  # each 20 x 64 KiB of one repeated byte
    if tls:  # gzipped: the uploads shrink to almost nothing on the wire
        assert summary["server_mib_received"] < 0.1 * uploaded_mib, summary["server_mib_received"]
    else:
        assert summary["server_mib_received"] > uploaded_mib, summary["server_mib_received"]
    if age:
        # Connections beyond the vanishing clients' and the 4 channels' first ones: those
        # that replaced a drained one, about one per channel per 0.5 s (~100 in ~12 s).
        replaced = summary["server_connections_accepted"] - outcomes["reset"] - 4
        assert replaced >= 20, replaced
