"""Benchmark puregrpc beside grpcio's sync server and grpclib, with h2load as the client.

    python bench/run.py [--duration 5] [--warm-up 1] [--rounds 3]
                        [--servers grpcio,grpclib,puregrpc] [--scenarios 1x1,1x32,8x8]
    python bench/run.py --servers grpcio,puregrpc-w1,puregrpc-w2,puregrpc-w4 --server-cpu 0,1

``puregrpc-wN`` is ``python -m puregrpc serve serve_echo:register --workers N`` on a fixed
free port: a supervisor and N worker processes sharing it (SO_REUSEPORT, Linux). Its
workers inherit the supervisor's CPU pinning, so give them as many CPUs as they should use.

Each run starts one server process pinned to one core (taskset -c 0), checks with a grpcio
client that it echoes correctly, warms it up with a short h2load run, measures with a timed
h2load run pinned to the other core (taskset -c 1), and stops the server. Servers alternate
within each scenario and round; the table shows the median req/s over the rounds. A cell
with any failed, errored, timed-out, non-2xx or message-less response is shown as FAILED,
never as a number.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import gen

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)

SERVER_SCRIPTS: Dict[str, str] = {
    "grpcio": "grpcio_server.py",
    "grpclib": "grpclib_server.py",
    "puregrpc": "puregrpc_server.py",
}
WORKERS = re.compile(r"puregrpc-w([1-9][0-9]*)")  # puregrpc serve --workers N
DEFAULT_SCENARIOS = "1x1,1x32,8x8"
START_TIMEOUT = 20.0
CHECK_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Scenario:
    connections: int
    streams: int

    @property
    def key(self) -> str:
        return f"{self.connections}x{self.streams}"

    @property
    def label(self) -> str:
        c, m = self.connections, self.streams
        return f"{c} conn{'s' if c != 1 else ''} x {m} stream{'s' if m != 1 else ''}"


@dataclass
class H2loadResult:
    req_per_s: float = 0.0
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    status_2xx: int = 0
    status_other: int = 0
    data_bytes: int = 0
    problems: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Cell:
    """All runs of one server in one scenario."""

    rates: List[float] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    skipped: str | None = None
    noisy: int = 0  # runs during which other processes used the CPUs

    @property
    def ok(self) -> bool:
        return bool(self.rates) and not self.problems and self.skipped is None

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.ok else None


# --------------------------------------------------------------------------- h2load


def parse_h2load(output: str, response_len: int) -> H2loadResult:
    """Parse h2load's summary and decide whether every response was a good gRPC reply.

    h2load does not read gRPC trailers, so an error status (e.g. UNIMPLEMENTED, sent as
    HTTP 200 with a trailers-only response) counts as "succeeded" for it. Such responses
    carry no message: every good reply carries exactly response_len bytes of DATA, so the
    DATA byte count must cover every succeeded request.
    """
    res = H2loadResult()
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", output)
    if m:
        res.req_per_s = float(m.group(1))
    else:
        res.problems.append("no 'finished in' line in h2load output")
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
    )
    if m:
        res.total, _, _, res.succeeded, res.failed, res.errored, res.timeout = (int(g) for g in m.groups())
    else:
        res.problems.append("no 'requests:' line in h2load output")
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if m:
        res.status_2xx = int(m.group(1))
        res.status_other = sum(int(g) for g in m.groups()[1:])
    m = re.search(r"traffic: .*?, ([\d.]+\w*) \((\d+)\) data", output)
    if m:
        res.data_bytes = int(m.group(2))
    else:
        res.problems.append("no 'traffic:' line in h2load output")

    if res.failed or res.errored or res.timeout:
        res.problems.append(
            f"{res.failed} failed, {res.errored} errored, {res.timeout} timed out of {res.total} requests"
        )
    if res.status_other:
        res.problems.append(f"{res.status_other} responses with a non-2xx HTTP status")
    if res.succeeded == 0 and not res.problems:
        res.problems.append("no request succeeded")
    with_message = res.data_bytes // response_len if response_len else res.succeeded
    if res.succeeded > with_message:
        res.problems.append(
            f"{res.succeeded - with_message} of {res.succeeded} 'succeeded' responses had no"
            f" {response_len}-byte message (gRPC error status?)"
        )
    return res


def h2load_cmd(h2load: str, port: int, scenario: Scenario, duration: float, data_file: str, cpu: str) -> List[str]:
    # H2LOAD_THREADS: client threads, for servers that outrun one h2load thread (--workers
    # on many cores); at most one per connection.
    threads = min(int(os.environ.get("H2LOAD_THREADS", "1")), scenario.connections)
    return [
        "taskset",
        "-c",
        cpu,
        h2load,
        f"-c{scenario.connections}",
        f"-m{scenario.streams}",
        f"-t{threads}",
        "-D",
        f"{round(duration * 1000)}ms",
        "-d",
        data_file,
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://127.0.0.1:{port}{gen.METHOD_PATH}",
    ]


def run_h2load(cmd: List[str], duration: float, response_len: int) -> Tuple[H2loadResult, str]:
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=duration + 30)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        res = H2loadResult(problems=[f"h2load did not finish within {duration + 30:g}s"])
        return res, out
    res = parse_h2load(proc.stdout, response_len)
    if proc.returncode != 0:
        res.problems.insert(0, f"h2load exited with status {proc.returncode}")
    return res, proc.stdout


# --------------------------------------------------------------------------- servers


class ServerProcess:
    """One benchmark server process, pinned to a core, announcing its port on stdout."""

    def __init__(self, name: str, cpu: str, log_dir: str, tag: str) -> None:
        self.name = name
        self.port: int | None = None
        self.stderr_path = os.path.join(log_dir, f"{tag}-{name}.stderr")
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop)
        env = dict(os.environ)
        src = os.path.join(REPO_DIR, "src")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self.workers = worker_count(name)
        if self.workers:
            # The supervisor prints no port: it needs a fixed one, and logs when all workers serve.
            env["PYTHONPATH"] = os.pathsep.join((BENCH_DIR, env["PYTHONPATH"]))
            self.port = free_port()
            command = [sys.executable, "-m", "puregrpc", "serve", "serve_echo:register"]
            command += ["--address", f"127.0.0.1:{self.port}", "--workers", str(self.workers), "--grace", "1"]
        else:
            command = [sys.executable, os.path.join(BENCH_DIR, SERVER_SCRIPTS[name])]
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpu, *command],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            cwd=REPO_DIR,
            env=env,
        )

    def wait_ready(self, timeout: float) -> str | None:
        """Read the port line. Returns None when ready, else what went wrong."""
        if self.workers:
            return self._wait_workers(timeout)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"did not print its port within {timeout:g}s"
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.2))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                    return f"exited with status {self.proc.returncode} before printing its port"
                buf += chunk
            elif self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode} before printing its port"
        line = buf.split(b"\n", 1)[0].strip()
        try:
            self.port = int(line)
        except ValueError:
            return f"printed {line[:80]!r} instead of a port number"
        return None

    def _wait_workers(self, timeout: float) -> str | None:
        """Wait for the supervisor's "serving ... with N workers" line in its log file."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"with {self.workers} workers" in self.stderr_tail(lines=10**6):
                return None
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode} before its workers served"
            time.sleep(0.1)
        return f"its {self.workers} workers did not all serve within {timeout:g}s"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> str | None:
        """SIGTERM, then SIGKILL if it lingers. Returns a note when it did not exit cleanly."""
        note = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                note = f"ignored SIGTERM for {STOP_TIMEOUT:g}s, killed"
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
        return note

    def stderr_tail(self, lines: int = 8) -> str:
        try:
            with open(self.stderr_path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def worker_count(name: str) -> int:
    """N for ``puregrpc-wN``; 0 for the other servers."""
    match = WORKERS.fullmatch(name)
    return int(match.group(1)) if match else 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_server(port: int, cpu: str) -> str | None:
    """Ask a grpcio client (in its own process, on the client core) for correct echoes."""
    cmd = ["taskset", "-c", cpu, sys.executable, os.path.join(BENCH_DIR, "check.py"), str(port)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHECK_TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"grpcio client check did not finish within {CHECK_TIMEOUT:g}s"
    if proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        return "grpcio client check failed: " + (detail[-1] if detail else f"{proc.returncode}")
    return None


# --------------------------------------------------------------------------- CPU noise

NOISY_CORES = 0.10  # CPU used by other processes during a run, in cores, that flags it
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class CpuSnapshot:
    """CPU seconds used so far: by the whole machine, the server, and this harness's children."""

    wall: float
    machine_busy: float
    machine_steal: float
    server: float
    ours: float

    @classmethod
    def take(cls, server_pid: int) -> CpuSnapshot | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            server_ticks = process_tree_ticks(server_pid)
        except (OSError, ValueError, IndexError):
            return None
        # /proc/stat: user nice system idle iowait irq softirq steal ...
        busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
        steal = fields[7] if len(fields) > 7 else 0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            wall=time.monotonic(),
            machine_busy=busy / CLK_TCK,
            machine_steal=steal / CLK_TCK,
            server=server_ticks / CLK_TCK,
            ours=children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime,
        )


def process_tree_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and of its living children (a supervisor's workers), in ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    ticks = int(stat[11]) + int(stat[12])
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                child = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(child[1]) == pid:  # its parent
            ticks += int(child[11]) + int(child[12])
    return ticks


def foreign_cores(before: CpuSnapshot | None, after: CpuSnapshot | None) -> float | None:
    """Cores used, on average, by processes other than the server, h2load and this harness."""
    if before is None or after is None or after.wall <= before.wall:
        return None
    busy = after.machine_busy - before.machine_busy
    busy -= after.server - before.server
    busy -= after.ours - before.ours
    busy += after.machine_steal - before.machine_steal  # a hypervisor's steal counts too
    return max(0.0, busy / (after.wall - before.wall))


# --------------------------------------------------------------------------- reporting


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def cell_text(cell: Cell, detail: bool) -> str:
    if cell.skipped is not None and not cell.rates:
        return cell.skipped
    if not cell.ok:
        return "FAILED"
    med = cell.median
    assert med is not None
    mark = "*" if cell.noisy else ""
    if detail and len(cell.rates) > 1:
        spread = f"[{fmt_rate(min(cell.rates))}-{fmt_rate(max(cell.rates))}]"
        return f"{fmt_rate(med)}{mark} {spread}"
    return fmt_rate(med) + mark


def ratio_text(results: Dict[str, Cell], servers: List[str]) -> str | None:
    if "puregrpc" not in servers or "grpcio" not in servers:
        return None
    pure, base = results["puregrpc"].median, results["grpcio"].median
    if pure is None or base is None or base == 0:
        return "-"
    return f"{pure / base:.2f}x"


def column_titles(servers: List[str], grpclib_loop: str) -> List[str]:
    names = {
        "grpcio": "grpcio sync (10 threads)",
        "grpclib": f"grpclib ({grpclib_loop})",
        "puregrpc": "puregrpc (10 threads)",
    }
    for name in servers:
        if worker_count(name):
            names[name] = f"puregrpc --workers {worker_count(name)}"
    titles = ["scenario", *(names[s] for s in servers)]
    if "puregrpc" in servers and "grpcio" in servers:
        titles.append("puregrpc / grpcio")
    return titles


def table_rows(
    scenarios: List[Scenario],
    servers: List[str],
    results: Dict[str, Dict[str, Cell]],
    detail: bool,
) -> List[List[str]]:
    rows = []
    for sc in scenarios:
        row = [sc.label, *(cell_text(results[sc.key][s], detail) for s in servers)]
        ratio = ratio_text(results[sc.key], servers)
        if ratio is not None:
            row.append(ratio)
        rows.append(row)
    return rows


def text_table(titles: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in [titles, *rows]) for i in range(len(titles))]
    lines = []
    for n, r in enumerate([titles, *rows]):
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(titles: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(titles) + " |", "|---" + "|---:" * (len(titles) - 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def tool_versions(h2load: str, grpclib_loop: str) -> str:
    parts = [f"Python {platform.python_version()}"]
    for mod in ("grpc", "grpclib"):
        try:
            module = __import__(mod)
            version = getattr(module, "__version__", "?")
        except ImportError:
            version = "not installed"
        parts.append(f"{'grpcio' if mod == 'grpc' else mod} {version}")
    parts[-1] += f" on {grpclib_loop}"
    try:
        out = subprocess.run([h2load, "--version"], capture_output=True, text=True).stdout
        parts.append(out.strip().splitlines()[0])
    except (OSError, IndexError):
        parts.append("h2load ?")
    return ", ".join(parts)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------- main


def parse_args(argv: List[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    p.add_argument("--warm-up", type=float, default=1.0, help="seconds of warm-up per run")
    p.add_argument("--rounds", type=int, default=3, help="runs per server and scenario")
    p.add_argument(
        "--servers", default="grpcio,grpclib,puregrpc", help="comma-separated; puregrpc-wN: puregrpc serve --workers N"
    )
    p.add_argument("--scenarios", default=DEFAULT_SCENARIOS, help="comma-separated CONNSxSTREAMS")
    p.add_argument("--server-cpu", default="0", help="taskset CPU list for the servers")
    p.add_argument("--client-cpu", default="1", help="taskset CPU list for h2load")
    p.add_argument("--h2load", default="h2load", help="h2load executable")
    p.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        help=f"rerun a run up to N times while other processes use more than {NOISY_CORES:g}"
        " core during it (default 0)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="print h2load's output")
    return p.parse_args(argv)


def parse_scenarios(spec: str) -> List[Scenario]:
    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", item)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise SystemExit(f"bad scenario {item!r}: expected CONNSxSTREAMS, e.g. 8x8")
        out.append(Scenario(int(m.group(1)), int(m.group(2))))
    return out


def main(argv: List[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    chosen = {s.strip() for s in args.servers.split(",") if s.strip()}
    servers = [s for s in SERVER_SCRIPTS if s in chosen]  # fixed order: grpcio, grpclib, ...
    servers += sorted((s for s in chosen if worker_count(s)), key=worker_count)  # then puregrpc-w1, -w2, ...
    unknown = sorted(chosen - set(servers))
    if unknown or not servers:
        choices = ", ".join([*SERVER_SCRIPTS, "puregrpc-wN"])
        raise SystemExit(f"unknown server(s) {unknown}; choose from {choices}")
    scenarios = parse_scenarios(args.scenarios)
    h2load = shutil.which(args.h2load)
    if h2load is None:
        raise SystemExit("h2load not found: install Debian's nghttp2-client")
    if shutil.which("taskset") is None:
        raise SystemExit("taskset not found: install util-linux")
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; server and client will share a core", flush=True)

    grpclib_loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    gen.generate()
    pb2 = gen.load_pb2()
    body = gen.request_body(gen.PAYLOAD_SIZE, pb2)
    response_len = len(body)  # the echo reply is the same message

    log_dir = tempfile.mkdtemp(prefix="puregrpc-bench-")
    data_file = os.path.join(log_dir, "request.bin")
    with open(data_file, "wb") as f:
        f.write(body)

    print(f"# {tool_versions(h2load, grpclib_loop)}")
    print(f"# {cpu_model()}, {os.cpu_count()} CPUs")
    print(f"# servers on CPU {args.server_cpu}, h2load on CPU {args.client_cpu}")
    each = f"{args.warm_up:g} s warm-up, {args.duration:g} s measured"
    print(f"# {args.rounds} round(s); each run: {each}")
    print(f"# request {len(body)} bytes; logs in {log_dir}")
    print(flush=True)

    results: Dict[str, Dict[str, Cell]] = {sc.key: {s: Cell() for s in servers} for sc in scenarios}
    broken: Dict[str, str] = {}  # server -> why it is not run any more
    notes: List[str] = []
    noisy_runs: List[str] = []

    for rnd in range(1, args.rounds + 1):
        for sc in scenarios:
            for name in servers:
                cell = results[sc.key][name]
                if name in broken:
                    cell.skipped = broken[name]
                    continue
                prefix = f"round {rnd}/{args.rounds}  {sc.key:>5}  {name:<9}"
                tag = f"r{rnd}-{sc.key}"
                for attempt in range(args.retry_noisy + 1):
                    rate, problem, fatal, noise = measure_one(
                        name, sc, args, h2load, data_file, response_len, log_dir, tag
                    )
                    # A failed run is never retried: failures must show, noisy or not.
                    if fatal or problem or noise is None or noise <= NOISY_CORES:
                        break
                    if attempt < args.retry_noisy:
                        print(f"{prefix}  noisy ({noise:.2f} cores used by others), rerun", flush=True)
                noise_text = ""
                if noise is not None:
                    noise_text = f"  (other processes: {noise:.2f} cores)"
                    if noise > NOISY_CORES:
                        cell.noisy += 1
                        noisy_runs.append(f"{name} {sc.key} round {rnd}: {noise:.2f} cores")
                        noise_text += " NOISY"
                if fatal:
                    broken[name] = fatal
                    cell.skipped = fatal
                    print(f"{prefix}  {fatal.upper()}: {problem}", flush=True)
                    notes.append(f"{name}: {fatal} (round {rnd}, {sc.key}): {problem}")
                    continue
                if rate is not None:
                    cell.rates.append(rate)
                if problem:
                    cell.problems.append(problem)
                    notes.append(f"{name} {sc.key} round {rnd}: {problem}")
                    shown = f"{fmt_rate(rate)} req/s" if rate is not None else "-"
                    print(f"{prefix}  FAILED ({shown}){noise_text}: {problem}", flush=True)
                else:
                    print(f"{prefix}  {fmt_rate(rate or 0):>8} req/s{noise_text}", flush=True)

    titles = column_titles(servers, grpclib_loop)
    elapsed = time.monotonic() - started
    print()
    print(text_table(titles, table_rows(scenarios, servers, results, detail=True)))
    print("\n(median req/s of the rounds, [min-max] of the runs)")
    if noisy_runs:
        print(
            f"\n* {len(noisy_runs)} run(s) shared the CPUs with other processes (more than"
            f" {NOISY_CORES:g} core on average while measuring); their numbers are unreliable:"
        )
        for n in noisy_runs:
            print(f"  - {n}")
    if notes:
        print("\nProblems:")
        for n in notes:
            print(f"  - {n}")
    print(f"\nTotal time: {elapsed:.0f} s\n")
    print(markdown_table(titles, table_rows(scenarios, servers, results, detail=False)))
    print()
    if noisy_runs:
        print(
            f"\\* at least one of this cell's runs shared the CPUs with other processes"
            f" ({len(noisy_runs)} noisy runs in all): unreliable.\n"
        )
    print(
        f"Unary echo, {gen.PAYLOAD_SIZE}-byte payload, h2load client; req/s, median of"
        f" {args.rounds} runs of {args.duration:g} s after {args.warm_up:g} s warm-up; servers"
        f" on CPU {args.server_cpu}, h2load on CPU {args.client_cpu}. {tool_versions(h2load, grpclib_loop)};"
        f" {cpu_model()}."
    )
    all_ok = all(c.ok for per in results.values() for c in per.values())
    return 0 if all_ok else 1


def measure_one(
    name: str,
    sc: Scenario,
    args: argparse.Namespace,
    h2load: str,
    data_file: str,
    response_len: int,
    log_dir: str,
    tag: str,
) -> Tuple[float | None, str | None, str | None, float | None]:
    """One run: start, check, warm up, measure, stop.

    Returns (req/s or None, problem or None, fatal or None, cores used by other processes
    during the measurement or None). A fatal outcome ("failed to start", "failed check")
    stops the server from being run again.
    """
    server = ServerProcess(name, args.server_cpu, log_dir, tag)
    try:
        why = server.wait_ready(START_TIMEOUT)
        if why is not None:
            tail = server.stderr_tail()
            return None, why + (f"\n{indent(tail)}" if tail else ""), "failed to start", None
        assert server.port is not None
        why = check_server(server.port, args.client_cpu)
        if why is not None:
            tail = server.stderr_tail()
            return None, why + (f"\n{indent(tail)}" if tail else ""), "failed check", None

        problems = []
        if args.warm_up > 0:
            cmd = h2load_cmd(h2load, server.port, sc, args.warm_up, data_file, args.client_cpu)
            warm, out = run_h2load(cmd, args.warm_up, response_len)
            if args.verbose:
                print(out)
            if not warm.ok:
                problems.append("warm-up: " + "; ".join(warm.problems))
        cmd = h2load_cmd(h2load, server.port, sc, args.duration, data_file, args.client_cpu)
        before = CpuSnapshot.take(server.proc.pid)
        res, out = run_h2load(cmd, args.duration, response_len)
        noise = foreign_cores(before, CpuSnapshot.take(server.proc.pid))
        if args.verbose:
            print(out)
        problems += res.problems
        if not server.alive():
            problems.append(f"server exited during the run (status {server.proc.returncode})")
            if "stopping on SIG" in server.stderr_tail():
                problems.append(
                    "it was sent a stop signal by another process on this machine"
                    " (the harness sends its SIGTERM only after h2load ends)"
                )
        rate = res.req_per_s if res.total else None
    finally:
        stop_note = server.stop()
    if stop_note:
        problems.append(stop_note)
    if problems:
        tail = server.stderr_tail()
        msg = "; ".join(problems) + (f"\n{indent(tail)}" if tail else "")
        return rate, msg, None, noise
    return rate, None, None, noise


def indent(text: str, prefix: str = "      | ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
