"""The benchmark harness (bench/run.py) works: every case against every server, every reply checked.

``bench/run.py --quick`` runs each case once, briefly, against each server and exits non-zero
when any server gave a wrong or failed reply; no figure is asserted. The other tests show
that the harness's checks catch a server that answers wrongly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from concurrent import futures
from typing import Any, Iterator, List

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "bench")
CASES = [
    "unary-1x1",
    "unary-1x32",
    "unary-8x8",
    "unary-large",
    "ss-small",
    "ss-large",
    "ss-large-h2load",
    "cs-large",
    "bidi",
]

pytest.importorskip("grpc_tools")
grpc = pytest.importorskip("grpc")


def bench_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH, os.path.join(REPO, "src"), env.get("PYTHONPATH")) if p)
    return env


def run_bench(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``bench/SCRIPT ARGS`` from the repository with the bench modules importable."""
    return subprocess.run(
        [sys.executable, os.path.join(BENCH, script), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=bench_env(),
    )


def can_import(module: str) -> bool:
    code = f"import {module}"
    return subprocess.run([sys.executable, "-c", code], env=bench_env(), capture_output=True).returncode == 0


@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load not installed (Debian's nghttp2-client)")
def test_quick_run_every_server_answers_every_case(tmp_path: Any) -> None:
    out = tmp_path / "quick.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())

    must_run = ["grpcio", "grpcio-aio", "puregrpc"]
    if importlib.util.find_spec("grpclib") is not None:
        must_run.append("grpclib")
    if can_import("puregrpc.aio"):
        must_run.append("puregrpc-aio")
    assert not set(must_run) & set(data["skipped"]), data["skipped"]
    assert list(data["cases"]) == CASES
    for case, per_server in data["cases"].items():
        for name in must_run:
            cell = per_server[name]
            assert cell["ok"], (case, name, cell["problems"])
            [run] = cell["runs"]
            assert run["problems"] == [], (case, name, run)
            # No figure is asserted; a streaming run is ok only after at least one call ended
            # with every message, summary and status checked (perhaps after its short window).
            if case.startswith("unary") and case != "unary-large":  # h2load's: a number of requests
                assert run["units"] >= 100 and run["p50_ms"] is not None, (case, name, run)
            if case == "ss-large-h2load":  # 8 calls of 2 messages, each call's DATA counted
                assert run["units"] >= 16 and run["p50_ms"] is not None, (case, name, run)

    # The report: what was run, where, then the tables.
    assert "Command: `python bench/run.py --quick" in proc.stdout
    assert "Machine: " in proc.stdout and " CPUs" in proc.stdout
    assert "| case | grpcio sync | grpc.aio |" in proc.stdout
    assert proc.stdout.count("| unary 100 B, 1x32 (h2load)") == 3  # throughput, CPU, latency


# --------------------------------------------------------------------------- the checks can fail


def lying_servicer(pb2: Any, pb2_grpc: Any) -> Any:
    """Each method almost right: one byte, one sequence number or one count off."""

    class Liar(pb2_grpc.EchoServicer):  # type: ignore[misc]
        def Unary(self, request: Any, context: Any) -> Any:
            return pb2.EchoMsg(payload=request.payload[:-1])

        def ServerStream(self, request: Any, context: Any) -> Iterator[Any]:
            import gen

            payload = gen.pattern(request.size)
            for seq in range(request.count):
                yield pb2.EchoMsg(payload=payload, seq=seq if seq != 1 else 7)

        def ClientStream(self, request_iterator: Iterator[Any], context: Any) -> Any:
            count = size = 0
            for msg in request_iterator:
                count += 1
                size += len(msg.payload)
            return pb2.StreamSummary(count=count, bytes=size - 1, bad=0)

        def Bidi(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
            for msg in request_iterator:
                yield pb2.EchoMsg(payload=msg.payload[::-1], seq=msg.seq)

    return Liar()


@pytest.fixture
def liar_port() -> Iterator[int]:
    sys.path.insert(0, BENCH)
    try:
        import gen

        gen.generate()
        pb2, pb2_grpc = gen.load()
    finally:
        sys.path.remove(BENCH)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    pb2_grpc.add_EchoServicer_to_server(lying_servicer(pb2, pb2_grpc), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


def run_client(port: int, kind: str, size: int) -> dict:
    cmd = [sys.executable, os.path.join(BENCH, "stream_client.py"), "--port", str(port), "--kind", kind]
    cmd += ["--calls", "2", "--count", "3", "--size", str(size), "--duration", "0.3", "--warm-up", "0"]
    proc = subprocess.run(cmd, input="go\n", capture_output=True, text=True, env=bench_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines: List[str] = proc.stdout.splitlines()
    assert lines[0] == "ready"
    return dict(json.loads(lines[1]))


def test_check_rejects_a_wrong_unary_echo(liar_port: int) -> None:
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "check.py"), str(liar_port)],
        capture_output=True,
        text=True,
        env=bench_env(),
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Unary call 0: wrong echo (99 bytes back for 100 sent)" in proc.stderr


@pytest.mark.parametrize(
    ("kind", "size", "said"),
    [
        ("ss", 100, "ServerStream message 1: seq 7"),
        ("cs", 1024 * 1024, "server counted 3 messages, 3145727 B, 0 bad"),
        ("bidi", 100, "Bidi echo 0: seq 0, 100 B, not the message sent"),
    ],
)
def test_stream_client_rejects_wrong_replies(liar_port: int, kind: str, size: int, said: str) -> None:
    result = run_client(liar_port, kind, size)
    assert result["problem_count"] > 0
    assert any(said in p for p in result["problems"]), result["problems"]
    assert result["calls"] == 0 and result["calls_ok_total"] == 0


def h2load_output(succeeded: int, data_bytes: int) -> str:
    """h2load's summary lines, as parse_h2load reads them."""
    return (
        f"finished in 1.00s, {succeeded}.00 req/s, 1.00MB/s\n"
        f"requests: {succeeded} total, {succeeded} started, {succeeded} done, {succeeded} succeeded, "
        "0 failed, 0 errored, 0 timeout\n"
        f"status codes: {succeeded} 2xx, 0 3xx, 0 4xx, 0 5xx\n"
        f"traffic: 1.00MB ({data_bytes + 500}) total, 500B (500) headers (space savings 0.00%), "
        f"1.00MB ({data_bytes}) data\n"
    )


def test_h2load_cases_count_every_good_responses_bytes() -> None:
    """A server-streaming call through h2load is good only with all its DATA: a call
    short of one message (or a trailers-only error, which has none) is a problem."""
    sys.path.insert(0, BENCH)
    try:
        import run
    finally:
        sys.path.remove(BENCH)
    per_call = 16 * (1024 * 1024 + 10)
    res, problems = run.parse_h2load(h2load_output(4, 4 * per_call), per_call)
    assert problems == [] and res["succeeded"] == 4
    _, problems = run.parse_h2load(h2load_output(4, 4 * per_call - (1024 * 1024 + 10)), per_call)
    assert problems == [
        "1 of 4 'succeeded' responses lacked the 16777376 bytes of DATA of a good reply (gRPC error status?)"
    ]


@pytest.mark.timeout(120)
@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset not installed (util-linux)")
def test_handoff_bench_measures_every_model() -> None:
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "handoff_bench.py"), "--duration", "0.3", "--rounds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {line.split()[0]: line.split()[1:4] for line in proc.stdout.splitlines()[2:]}
    assert sorted(rows) == ["loop", "task", "thread"], proc.stdout
    for model, (rate, cpu, switches) in rows.items():
        assert float(rate.replace(",", "")) > 0 and float(cpu) > 0 and float(switches) >= 0, (model, proc.stdout)


@pytest.mark.timeout(120)
def test_goaway_race_counts_calls_and_drains_and_a_large_retry_buffer_loses_none() -> None:
    """bench/goaway_race.py against the sync server (the quick soak drains the aio one):
    connections rotate every 0.2 s under 1 MiB calls. With the client's retry buffer
    above the request, no call may fail: a call the drain cut after the server took it,
    a wrong or lost reply, or a hang (past the 10 s deadline) would. A stream the server
    refused would not: the client retries it; the soak's streams_refused check covers
    that. With the default buffer a few large calls may fail (the client's race)."""
    proc = run_bench("goaway_race.py", "--servers", "puregrpc", "--seconds", "1.5", timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("puregrpc ")]
    assert len(rows) == 2 and "default" in rows[0] and "4" in rows[1], proc.stdout
    for row in rows:
        connections, small, large = (int(row[row.index(word) + 1]) for word in ("connections", "calls", "small"))
        # 1.5 s at age 0.2 s on 4 channels: well over 4 connections, each drained.
        assert connections > 8 and small > 0 and large > 0, proc.stdout
    failed = rows[1][rows[1].index("failed") + 1 :]
    assert failed[:4] == ["0", "small", "0", "large"], proc.stdout


@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed (Debian's valgrind)")
def test_instructions_counts_a_positive_figure_per_message() -> None:
    smoke = ["--servers=puregrpc-aio", "--cases=bidi", "--units=2,6"]
    proc = run_bench("instructions.py", *smoke, timeout=280)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("bidi")]
    assert len(rows) == 1 and rows[0][1] == "puregrpc-aio", proc.stdout
    # 8 streams x 4 ping-pongs between the two runs: a message costs some thousands of
    # instructions at the least (a figure of 0 or below would mean the runs were not told apart).
    assert float(rows[0][2]) > 10, proc.stdout


def test_report_marks_cpu_figures_measured_in_few_clock_ticks() -> None:
    """/proc/PID/stat counts CPU in ticks: a figure from a handful of them is flagged, not
    printed as if exact (a 0.4 s quick run of a fast server can measure 0 ticks)."""
    sys.path.insert(0, BENCH)
    try:
        import run
    finally:
        sys.path.remove(BENCH)
    [case] = run.make_cases("unary-1x32", quick=False)
    servers = run.parse_servers("grpcio,puregrpc", None)
    report = run.Report([case], servers, spread_limit=0.1)
    tick = 1 / run.CLK_TCK
    report.cell(case, servers[0]).runs.append(
        run.Run(rate=9000.0, units=9000, cpu_s=200 * tick, cpu_per_unit_us=200 * tick / 9000 * 1e6)
    )
    report.cell(case, servers[1]).runs.append(
        run.Run(rate=30000.0, units=3000, cpu_s=3 * tick, cpu_per_unit_us=3 * tick / 3000 * 1e6)
    )
    markdown = report.markdown()
    cpu_row = next(line for line in markdown.splitlines() if "µs per call" in line)
    grpcio_cell, puregrpc_cell = cpu_row.split("|")[2:4]
    assert "‡" not in grpcio_cell and "‡" in puregrpc_cell, cpu_row
    assert any(note.startswith("‡ coarse:") for note in report.footnotes())
    assert report.as_json()["cases"]["unary-1x32"]["puregrpc"]["cpu_coarse"] is True


@pytest.mark.parametrize("narrower", [["--servers", "grpcio"], ["--cases", "bidi"], ["--scenarios", "1x1"]])
def test_all_refuses_a_narrower_selection(narrower: List[str]) -> None:
    """--all with --servers (or --cases) once ran everything and printed the narrower
    command as its own; it is an error now, before anything starts."""
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH, "run.py"), "--all", *narrower],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--all runs every server and every case" in proc.stderr, proc.stderr


def test_servers_under_one_interpreter_get_distinct_titles(tmp_path: Any) -> None:
    """An A/B of two trees under one interpreter (NAME@SCRIPT, each script setting its
    own PYTHONPATH) once printed two columns with the same title."""
    sys.path.insert(0, BENCH)
    try:
        import run
    finally:
        sys.path.remove(BENCH)
    scripts = []
    for name in ("new", "old"):
        script = tmp_path / name
        script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        script.chmod(0o755)
        scripts.append(str(script))
    specs = run.parse_servers(f"grpcio,puregrpc@{scripts[0]},puregrpc@{scripts[1]}", None)
    assert run.probe_all(specs, run.server_env()) == {}
    run.tell_apart(specs)
    labels = [spec.label for spec in specs]
    assert len(set(labels)) == 3, labels
    assert labels[0] == "grpcio sync"  # no collision, no tag
    assert labels[1].endswith(f"({scripts[0]})") and labels[2].endswith(f"({scripts[1]})"), labels
