"""Benchmark puregrpc beside grpcio (sync and grpc.aio) and grpclib: unary and streaming cases.

    python bench/run.py --all --rounds 3       # every server, every case (the default)
    python bench/run.py --quick                # every case once, tiny durations: a correctness smoke run
    python bench/run.py --servers grpcio,puregrpc --cases unary-1x32,bidi
    python bench/run.py --servers grpcio,puregrpc,puregrpc@pypy3        # puregrpc under PyPy too
    python bench/run.py --servers grpcio,puregrpc-w1,puregrpc-w2 --cases unary-8x8 --server-cpu 0,1

Servers (each its own process, pinned with taskset to --server-cpu): grpcio (grpcio's sync
server, 10 threads), grpcio-aio (grpc.aio), grpclib, puregrpc (puregrpc.server, 10 threads),
puregrpc-aio (puregrpc.aio), puregrpc-wN (``puregrpc serve --workers N``). NAME@PYTHON runs
a server under another interpreter; --runtime PYTHON does so for every puregrpc server. A
server whose modules do not import under its interpreter is skipped, saying why.

Cases: unary-CxM (unary 100 B echo, h2load with C connections x M streams; unary-1x1,
unary-1x32, unary-8x8 by default), ss-small / ss-large (server streaming, 100 B / 1 MiB
messages), ss-large-h2load (the same 1 MiB calls, h2load as the client), cs-large
(client streaming, 1 MiB messages), bidi (100 B ping-pong). The other streaming cases use
grpcio's asyncio client (stream_client.py) in processes pinned to --client-cpu. Every
reply is checked (h2load's by their DATA byte count); a cell with any wrong reply or failed
call is FAILED.

Each round starts every server, checks all four methods with a grpcio client (check.py),
runs every case against every server in turn (the servers' order rotates each round), checks
them again and stops them. A cell's figures are the medians over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import gen

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
MIB = 1024 * 1024

SERVER_SCRIPTS: Dict[str, str] = {
    "grpcio": "grpcio_server.py",
    "grpcio-aio": "grpcio_aio_server.py",
    "grpclib": "grpclib_server.py",
    "puregrpc": "puregrpc_server.py",
    "puregrpc-aio": "puregrpc_aio_server.py",
}
SERVER_MODULES: Dict[str, str] = {  # what must import for the server to run
    "grpcio": "grpc",
    "grpcio-aio": "grpc.aio",
    "grpclib": "grpclib",
    "puregrpc": "puregrpc",
    "puregrpc-aio": "puregrpc.aio",
}
BASELINE = "grpcio"
WORKERS = re.compile(r"puregrpc-w([1-9][0-9]*)")  # puregrpc serve --workers N
DEFAULT_CASES = "unary-1x1,unary-1x32,unary-8x8,unary-large,ss-small,ss-large,ss-large-h2load,cs-large,bidi"
START_TIMEOUT = 30.0
CHECK_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
GRACE = 20.0  # seconds the streaming calls running at the end of a run may take to finish
NOISY_CORES = 0.10  # CPU used by other processes during a run, in cores, that flags it
CLIENT_BOUND = 0.90  # share of the client's CPUs busy that flags a run as client-bound
# /proc/PID/stat counts CPU in clock ticks (10 ms at the usual 100 Hz): a run whose server
# used fewer than this many has a CPU figure that one tick moves by 2% or more.
COARSE_TICKS = 50
STARTED: List[ServerProcess] = []  # every server process started, stopped at the end whatever happens
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    key: str
    kind: str  # unary | ss-h2load | ss | cs | bidi | ul
    size: int = gen.PAYLOAD_SIZE
    connections: int = 1  # h2load cases: h2load -c
    streams: int = 1  # h2load cases: h2load -m
    calls: int = 1  # grpc client cases: concurrent calls, over all client processes
    count: int = 1  # streaming cases: messages per call

    @property
    def h2load(self) -> bool:
        return self.kind in ("unary", "ss-h2load")

    @property
    def large(self) -> bool:
        return self.size >= MIB

    @property
    def unit(self) -> str:
        return "req/s" if self.kind == "unary" else ("MB/s" if self.large else "msg/s")

    @property
    def per(self) -> str:
        """What server CPU is divided by."""
        return "call" if self.kind == "unary" else ("MiB message" if self.size == MIB else "message")

    @property
    def label(self) -> str:
        size = f"{self.size // MIB} MiB" if self.large else f"{self.size} B"
        if self.kind == "unary":
            return f"unary {size}, {self.connections}x{self.streams} (h2load)"
        if self.kind == "ss-h2load":
            return f"server-streaming {size}, {self.connections}x{self.streams} calls x {self.count} (h2load)"
        if self.kind == "ul":
            return f"unary {size}, {self.calls} calls at a time (grpc.aio)"
        what = {"ss": "server-streaming", "cs": "client-streaming", "bidi": "bidi ping-pong"}[self.kind]
        return f"{what} {size}, {self.calls} {'streams' if self.kind == 'bidi' else 'calls'} x {self.count}"


def make_cases(spec: str, quick: bool) -> List[Case]:
    # --quick: calls short enough that several finish (status and summary checked) in its tiny runs.
    named = {
        "ss-small": Case("ss-small", "ss", size=gen.PAYLOAD_SIZE, calls=8, count=50 if quick else 1000),
        "ss-large": Case("ss-large", "ss", size=MIB, calls=2, count=2 if quick else 16),
        # The same calls with h2load as the client (one connection, two calls at a time): a
        # client that costs little per byte, so the server's own limit shows.
        "ss-large-h2load": Case("ss-large-h2load", "ss-h2load", size=MIB, streams=2, count=2 if quick else 16),
        "cs-large": Case("cs-large", "cs", size=MIB, calls=2, count=2 if quick else 16),
        "bidi": Case("bidi", "bidi", size=gen.PAYLOAD_SIZE, calls=8, count=20 if quick else 200),
        # 1 MiB each way per call (Unary echo), with grpc.aio's client rather than h2load
        "unary-large": Case("unary-large", "ul", size=MIB, calls=2, count=1),
    }
    out: List[Case] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        m = re.fullmatch(r"(?:unary-)?(\d+)x(\d+)", item)
        if m and int(m.group(1)) >= 1 and int(m.group(2)) >= 1:
            c, s = int(m.group(1)), int(m.group(2))
            out.append(Case(f"unary-{c}x{s}", "unary", connections=c, streams=s))
        elif item in named:
            out.append(named[item])
        else:
            raise SystemExit(f"unknown case {item!r}: choose from unary-CxM (e.g. unary-8x8), {', '.join(named)}")
    return out


# --------------------------------------------------------------------------- servers


@dataclass
class ServerSpec:
    name: str  # as given, e.g. "puregrpc@pypy3"
    base: str  # grpcio, grpcio-aio, grpclib, puregrpc, puregrpc-aio, puregrpc-wN
    python: str
    workers: int = 0
    runtime: str = ""  # e.g. "CPython 3.11.7", from the interpreter itself
    loop: str = ""  # asyncio servers: the event loop they run on
    tag: str = ""  # set where two servers' labels would be the same (see tell_apart)

    @property
    def module(self) -> str:
        return "puregrpc" if self.workers else SERVER_MODULES[self.base]

    @property
    def label(self) -> str:
        names = {
            "grpcio": "grpcio sync",
            "grpcio-aio": "grpc.aio",
            "grpclib": f"grpclib ({self.loop})" if self.loop else "grpclib",
            "puregrpc": "puregrpc",
            "puregrpc-aio": f"puregrpc.aio ({self.loop})" if self.loop == "uvloop" else "puregrpc.aio",
        }
        text = names.get(self.base) or f"puregrpc --workers {self.workers}"
        if self.python != sys.executable:
            text += f" [{self.runtime or self.python}]"
        if self.tag:
            text += f" ({self.tag})"
        return text


def parse_servers(spec: str, runtime: Optional[str]) -> List[ServerSpec]:
    out: List[ServerSpec] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        base, _, python = item.partition("@")
        workers = WORKERS.fullmatch(base)
        if base not in SERVER_SCRIPTS and not workers:
            raise SystemExit(f"unknown server {base!r}: choose from {', '.join(SERVER_SCRIPTS)}, puregrpc-wN")
        if not python and runtime and base.startswith("puregrpc"):
            python = runtime
        exe = sys.executable
        if python:
            found = shutil.which(python)
            if found is None:
                raise SystemExit(f"interpreter {python!r} for {item} not found")
            exe = os.path.abspath(found) if os.sep in python else found
        if any(s.name == item for s in out):
            continue
        out.append(ServerSpec(item, base, exe, int(workers.group(1)) if workers else 0))
    if not out:
        raise SystemExit("no servers given")
    return out


PROBE = """
import importlib.util, json, platform, sys
out = {"impl": platform.python_implementation(), "version": platform.python_version(), "missing": {}}
for name in ["uvloop", *sys.argv[1:]]:
    try:
        found = importlib.util.find_spec(name) is not None
        problem = "" if found else "No module named " + repr(name)
    except Exception as exc:  # a parent package that does not import
        problem = type(exc).__name__ + ": " + str(exc)
    if problem:
        out["missing"][name] = problem
print(json.dumps(out))
"""


def needed_modules(spec: ServerSpec) -> List[str]:
    extra = ["google.protobuf", "hpack"] if spec.base.startswith("puregrpc") else ["google.protobuf"]
    return [*extra, spec.module]


def probe_all(specs: List[ServerSpec], env: Dict[str, str]) -> Dict[str, str]:
    """Fill in each spec's runtime and loop; return name -> why it cannot run (a module missing).

    One light process per interpreter: it looks the modules up without importing them (their
    parent packages excepted). A module that is there but fails to import makes its server
    fail to start, which is reported as a failure, not skipped.
    """
    by_python: Dict[str, List[ServerSpec]] = {}
    for spec in specs:
        by_python.setdefault(spec.python, []).append(spec)
    started = {}
    why: Dict[str, str] = {}
    for python, group in by_python.items():
        modules = sorted({m for spec in group for m in needed_modules(spec)})
        try:
            started[python] = subprocess.Popen(
                [python, "-c", PROBE, *modules],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=REPO_DIR,
            )
        except OSError as exc:
            why.update({spec.name: f"{python}: {exc}" for spec in group})
    for python, proc in started.items():
        group = by_python[python]
        try:
            out, _ = proc.communicate(timeout=120)
            said = json.loads(out)
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.communicate()
            why.update({spec.name: f"{python} did not answer what it has" for spec in group})
            continue
        for spec in group:
            spec.runtime = f"{said['impl']} {said['version']}"
            uvloop = "uvloop" not in said["missing"]
            spec.loop = "uvloop" if uvloop and spec.base != "grpcio-aio" else "asyncio"  # grpc.aio: asyncio's loop
            missing = [said["missing"][m] for m in needed_modules(spec) if m in said["missing"]]
            if missing:
                why[spec.name] = f"under {python}: " + "; ".join(missing)
    return why


def tell_apart(specs: List[ServerSpec]) -> None:
    """After probe_all (labels name the runtime): servers whose titles would be the same,
    two trees under one interpreter (an A/B: puregrpc@OLD, a script that sets
    PYTHONPATH), are tagged with the interpreter as given."""
    by_label: Dict[str, List[ServerSpec]] = {}
    for spec in specs:
        by_label.setdefault(spec.label, []).append(spec)
    for same in by_label.values():
        if len(same) > 1:
            for spec in same:
                spec.tag = spec.python if spec.python != sys.executable else "this Python"


def server_env() -> Dict[str, str]:
    env = dict(os.environ)
    src = os.path.join(REPO_DIR, "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (BENCH_DIR, src, env.get("PYTHONPATH")) if p)
    return env


def pinned(cpus: Optional[str], command: List[str]) -> List[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


class ServerProcess:
    """One benchmark server process, pinned, announcing its port on stdout."""

    def __init__(self, spec: ServerSpec, cpus: Optional[str], log_dir: str, tag: str) -> None:
        self.spec = spec
        self.port: Optional[int] = None
        self._signalled = False
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.name)
        self.stderr_path = os.path.join(log_dir, f"{tag}-{safe}.stderr")
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop)
        if spec.workers:
            # The supervisor prints no port: it needs a fixed one, and logs when all workers serve.
            self.port = free_port()
            command = [spec.python, "-m", "puregrpc", "serve", "serve_echo:register"]
            command += ["--address", f"127.0.0.1:{self.port}", "--workers", str(spec.workers), "--grace", "1"]
        else:
            command = [spec.python, os.path.join(BENCH_DIR, SERVER_SCRIPTS[spec.base])]
        self.proc = subprocess.Popen(
            pinned(cpus, command),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            cwd=REPO_DIR,
            env=server_env(),
        )

    def wait_ready(self, deadline: float) -> Optional[str]:
        """Read the port line. Returns None when ready, else what went wrong."""
        if self.spec.workers:
            return self._wait_workers(deadline)
        assert self.proc.stdout is not None
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return "did not print its port in time"
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

    def _wait_workers(self, deadline: float) -> Optional[str]:
        """Wait for the supervisor's "serving ... with N workers" line in its log file."""
        while time.monotonic() < deadline:
            if f"with {self.spec.workers} workers" in self.stderr_tail(lines=10**6):
                return None
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode} before its workers served"
            time.sleep(0.1)
        return f"its {self.spec.workers} workers did not all serve in time"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM, without waiting (stop() waits)."""
        if self.proc.poll() is None and not self._signalled:
            self.proc.send_signal(signal.SIGTERM)
            self._signalled = True

    def stop(self) -> Optional[str]:
        """SIGTERM, then SIGKILL if it lingers. Returns a note when it did not exit cleanly."""
        note = None
        self.terminate()
        if self.proc.poll() is None:
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_servers(ports: Dict[str, int], pool: ClientPool) -> Dict[str, str]:
    """Check every server's four methods with check.py's grpcio client. Returns name -> problem."""
    if not ports:
        return {}
    client = pool.get(0)
    client.send(json.dumps({"check": list(ports.values())}))
    line = client.read_line(time.monotonic() + CHECK_TIMEOUT)
    try:
        answers = json.loads(line or "")["check"]
    except (ValueError, KeyError, TypeError):
        why = client.explain(line)
        client.abandon()
        return {name: f"grpcio client check: {why}" for name in ports}
    out = {}
    for name, port in ports.items():
        answer = answers.get(str(port))
        if answer != "ok":
            out[name] = f"grpcio client check failed: {answer}"
    return out


# --------------------------------------------------------------------------- CPU accounting


def proc_ticks(pid: int) -> Tuple[int, int]:
    """(utime + stime, parent pid) of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        stat = f.read().rsplit(")", 1)[1].split()
    return int(stat[11]) + int(stat[12]), int(stat[1])


def process_tree_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and of its living children (a supervisor's workers), in ticks."""
    ticks = proc_ticks(pid)[0]
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pid:
            continue
        try:
            child, parent = proc_ticks(int(entry))
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile, or not a process
        if parent == pid:
            ticks += child
    return ticks


@dataclass
class CpuSnapshot:
    """CPU seconds used so far: by the whole machine, the server, and this harness with its clients."""

    wall: float
    machine_busy: float
    machine_steal: float
    server: float
    ours: float

    @classmethod
    def take(cls, server_pid: int, client_pids: List[int], tree: bool = False) -> Optional[CpuSnapshot]:
        """tree: count the server's child processes too (a supervisor's workers)."""
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
            server_ticks = process_tree_ticks(server_pid) if tree else proc_ticks(server_pid)[0]
            client_ticks = sum(proc_ticks(pid)[0] for pid in client_pids)
        except (OSError, ValueError, IndexError):
            return None
        # /proc/stat: user nice system idle iowait irq softirq steal ... Interrupt time is
        # left out: most of it is the benchmark's own network traffic, which the kernel may
        # charge to no process.
        busy = fields[0] + fields[1] + fields[2]
        steal = fields[7] if len(fields) > 7 else 0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            wall=time.monotonic(),
            machine_busy=busy / CLK_TCK,
            machine_steal=steal / CLK_TCK,
            server=server_ticks / CLK_TCK,
            ours=children.ru_utime + children.ru_stime + me.ru_utime + me.ru_stime + client_ticks / CLK_TCK,
        )


def foreign_cores(before: Optional[CpuSnapshot], after: Optional[CpuSnapshot]) -> Optional[float]:
    """Cores used, on average, by processes other than the server, the clients and this harness."""
    if before is None or after is None or after.wall <= before.wall:
        return None
    busy = after.machine_busy - before.machine_busy
    busy -= after.server - before.server
    busy -= after.ours - before.ours
    busy += after.machine_steal - before.machine_steal  # a hypervisor's steal counts too
    return max(0.0, busy / (after.wall - before.wall))


def server_cpu(before: Optional[CpuSnapshot], after: Optional[CpuSnapshot]) -> Optional[float]:
    if before is None or after is None:
        return None
    return after.server - before.server


# --------------------------------------------------------------------------- one run


@dataclass
class Run:
    """What one run of one case against one server measured."""

    rate: Optional[float] = None  # req/s, msg/s or MB/s
    units: int = 0  # calls (unary) or messages in the measured window
    cpu_per_unit_us: Optional[float] = None
    cpu_s: Optional[float] = None  # the server's CPU seconds in the measured window
    p50_ms: Optional[float] = None
    p99_ms: Optional[float] = None
    noise: Optional[float] = None  # cores used by other processes
    client_load: Optional[float] = None  # share of the client's CPUs it kept busy
    problems: List[str] = field(default_factory=list)


def percentiles(values_us: List[int]) -> Tuple[Optional[float], Optional[float]]:
    if not values_us:
        return None, None
    ordered = sorted(values_us)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0

    return at(0.50), at(0.99)


def parse_h2load(output: str, response_len: int) -> Tuple[Dict[str, Any], List[str]]:
    """Parse h2load's summary and decide whether every response was a good gRPC reply.

    h2load does not read gRPC trailers, so an error status (e.g. UNIMPLEMENTED, sent as
    HTTP 200 with a trailers-only response) counts as "succeeded" for it. Such responses
    carry no message: every good reply carries exactly response_len bytes of DATA, so the
    DATA byte count must cover every succeeded request.
    """
    res: Dict[str, Any] = {"req_per_s": 0.0, "succeeded": 0, "total": 0}
    problems: List[str] = []
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", output)
    if m:
        res["req_per_s"] = float(m.group(1))
    else:
        problems.append("no 'finished in' line in h2load output")
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        output,
    )
    failed = errored = timeout = 0
    if m:
        res["total"], _, _, res["succeeded"], failed, errored, timeout = (int(g) for g in m.groups())
    else:
        problems.append("no 'requests:' line in h2load output")
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    status_other = sum(int(g) for g in m.groups()[1:]) if m else 0
    m = re.search(r"traffic: .*?, ([\d.]+\w*) \((\d+)\) data", output)
    data_bytes = int(m.group(2)) if m else 0
    if not m:
        problems.append("no 'traffic:' line in h2load output")
    if failed or errored or timeout:
        problems.append(f"{failed} failed, {errored} errored, {timeout} timed out of {res['total']} requests")
    if status_other:
        problems.append(f"{status_other} responses with a non-2xx HTTP status")
    if res["succeeded"] == 0 and not problems:
        problems.append("no request succeeded")
    with_message = data_bytes // response_len if response_len else res["succeeded"]
    if res["succeeded"] > with_message:
        problems.append(
            f"{res['succeeded'] - with_message} of {res['succeeded']} 'succeeded' responses lacked the"
            f" {response_len} bytes of DATA of a good reply (gRPC error status?)"
        )
    return res, problems


class Bench:
    def __init__(self, args: argparse.Namespace, h2load: Optional[str], log_dir: str) -> None:
        self.args = args
        self.h2load = h2load
        self.log_dir = log_dir
        pb2 = gen.load_pb2()
        self.body = gen.request_body(gen.PAYLOAD_SIZE, pb2)
        self.data_file = os.path.join(log_dir, "request.bin")
        with open(self.data_file, "wb") as f:
            f.write(self.body)
        self.clients = ClientPool(cpu_list(args.client_cpu) if args.client_cpu else [], log_dir)
        self.pb2 = pb2
        self._targets: Dict[str, Tuple[str, str, int]] = {}

    def h2load_target(self, case: Case) -> Tuple[str, str, int]:
        """(request body file, path, DATA bytes of one good response) of an h2load case."""
        if case.kind == "unary":
            return self.data_file, gen.METHOD_PATH, len(self.body)
        target = self._targets.get(case.key)
        if target is None:
            body = gen.grpc_frame(self.pb2.StreamRequest(count=case.count, size=case.size).SerializeToString())
            path = os.path.join(self.log_dir, f"request-{case.key}.bin")
            with open(path, "wb") as f:
                f.write(body)
            payload = gen.pattern(case.size)
            response = sum(
                len(gen.grpc_frame(self.pb2.EchoMsg(payload=payload, seq=seq).SerializeToString()))
                for seq in range(case.count)
            )
            target = self._targets[case.key] = (path, gen.SERVER_STREAM_PATH, response)
        return target

    def measure(self, server: ServerProcess, case: Case, tag: str) -> Run:
        if case.h2load:
            return self.measure_unary(server, case, tag)
        return self.measure_stream(server, case)

    # -- unary: h2load

    def h2load_cmd(self, port: int, case: Case, duration: float, log_file: Optional[str]) -> List[str]:
        # H2LOAD_THREADS: client threads, for servers that outrun one h2load thread (--workers
        # on many cores); at most one per connection.
        assert self.h2load is not None
        threads = min(int(os.environ.get("H2LOAD_THREADS", "1")), case.connections)
        data_file, path, _ = self.h2load_target(case)
        cmd = [self.h2load, f"-c{case.connections}", f"-m{case.streams}", f"-t{threads}"]
        if self.args.quick:  # a number of requests, not a time: it must finish however loaded the machine
            least = 100 if case.kind == "unary" else 8
            cmd += ["-n", str(max(least, 4 * case.connections * case.streams)), "-d", data_file]
        else:
            cmd += ["-D", f"{max(1, round(duration * 1000))}ms", "-d", data_file]
        cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        if log_file:
            cmd += [f"--log-file={log_file}"]
        return pinned(self.args.client_cpu, [*cmd, f"http://127.0.0.1:{port}{path}"])

    def run_h2load(self, cmd: List[str], duration: float, response_len: int) -> Tuple[Dict[str, Any], List[str], str]:
        try:
            proc = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=duration + 60
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else ""
            return {}, [f"h2load did not finish within {duration + 60:g}s"], out
        res, problems = parse_h2load(proc.stdout, response_len)
        if proc.returncode != 0:
            problems.insert(0, f"h2load exited with status {proc.returncode}")
        if self.args.verbose:
            print(proc.stdout)
        return res, problems, proc.stdout

    def measure_unary(self, server: ServerProcess, case: Case, tag: str) -> Run:
        """An h2load case: unary calls, or server-streaming calls (ss-h2load: h2load reads
        the messages without decoding them; every call's DATA byte count is checked, and
        check.py checks the messages themselves at each round's start and end)."""
        assert server.port is not None
        run = Run()
        args = self.args
        response_len = self.h2load_target(case)[2]
        if args.warm_up > 0:
            cmd = self.h2load_cmd(server.port, case, args.warm_up, None)
            _, problems, _ = self.run_h2load(cmd, args.warm_up, response_len)
            # A short warm-up on a busy machine may finish no request: the measured run tells.
            run.problems += ["warm-up: " + p for p in problems if p != "no request succeeded"]
        log_file = os.path.join(self.log_dir, f"{tag}-{case.key}-h2load.log")
        cmd = self.h2load_cmd(server.port, case, args.duration, log_file)
        before = CpuSnapshot.take(server.proc.pid, [], bool(server.spec.workers))
        res, problems, _ = self.run_h2load(cmd, args.duration, response_len)
        after = CpuSnapshot.take(server.proc.pid, [], bool(server.spec.workers))
        run.problems += problems
        run.noise = foreign_cores(before, after)
        if before and after and after.wall > before.wall:
            threads = min(int(os.environ.get("H2LOAD_THREADS", "1")), case.connections)
            run.client_load = (after.ours - before.ours) / (after.wall - before.wall) / threads
        if res.get("total"):
            if case.kind == "unary":
                run.rate = res["req_per_s"]
                run.units = res["succeeded"]
            else:  # MB/s of payload; server CPU per message
                run.rate = res["req_per_s"] * case.count * case.size / 1e6
                run.units = res["succeeded"] * case.count
        cpu = server_cpu(before, after)
        run.cpu_s = cpu
        if cpu is not None and run.units:
            run.cpu_per_unit_us = cpu / run.units * 1e6
        # Every request's HTTP status and time, from h2load's log.
        durations: List[int] = []
        bad_status = 0
        try:
            with open(log_file, encoding="ascii") as f:
                for line in f:
                    cols = line.split("\t")
                    if len(cols) >= 3:
                        if cols[1] == "200":
                            durations.append(int(cols[2]))
                        else:
                            bad_status += 1
            os.unlink(log_file)
        except (OSError, ValueError) as exc:
            run.problems.append(f"h2load log: {exc}")
        if bad_status:
            run.problems.append(f"{bad_status} requests without HTTP status 200 in h2load's log")
        run.p50_ms, run.p99_ms = percentiles(durations)
        return run

    # -- streaming: grpc.aio clients

    def measure_stream(self, server: ServerProcess, case: Case) -> Run:
        assert server.port is not None
        args = self.args
        run = Run()
        procs = max(1, min(case.calls, len(self.clients.slots), args.client_procs or case.calls))
        share = [case.calls // procs + (1 if i < case.calls % procs else 0) for i in range(procs)]
        clients = [self.clients.get(i) for i in range(procs)]
        for client, calls in zip(clients, share):
            command = {"port": server.port, "kind": case.kind, "calls": calls, "count": case.count}
            command.update(size=case.size, duration=args.duration, warm_up=args.warm_up, grace=GRACE)
            client.send(json.dumps(command))
        deadline = time.monotonic() + START_TIMEOUT + args.warm_up
        for i, client in enumerate(clients):
            line = client.read_line(deadline)
            if line != "ready":
                run.problems.append(f"client {i}: {client.explain(line)}")
        if run.problems:
            for client in clients:
                client.abandon()
            return run
        pids = [c.proc.pid for c in clients]
        before = CpuSnapshot.take(server.proc.pid, pids, bool(server.spec.workers))
        for client in clients:
            client.send("go")
        time.sleep(args.duration)
        after = CpuSnapshot.take(server.proc.pid, pids, bool(server.spec.workers))
        results = []
        deadline = time.monotonic() + 30 + GRACE
        for i, client in enumerate(clients):
            line = client.read_line(deadline)
            try:
                results.append(json.loads(line or ""))
            except ValueError:
                run.problems.append(f"client {i}: {client.explain(line)}")
                client.abandon()
        if run.problems:
            return run
        for r in results:
            if r.get("cancelled"):
                run.problems.append(f"{r['cancelled']} call(s) still unfinished {GRACE:g} s after the run, cancelled")
            run.problems += r["problems"]
            if r["problem_count"] > len(r["problems"]):
                run.problems.append(f"... {r['problem_count'] - len(r['problems'])} more problems")
        if run.problems and "messages" not in results[0]:
            return run
        messages = sum(r["messages"] for r in results)
        moved = sum(r["bytes"] for r in results)
        if not sum(r["calls_ok_total"] for r in results):
            run.problems.append("no call finished (status and summary checked) in the run")
        run.units = messages
        run.rate = moved / args.duration / 1e6 if case.large else messages / args.duration
        cpu = server_cpu(before, after)
        run.cpu_s = cpu
        if cpu is not None and messages:
            run.cpu_per_unit_us = cpu / messages * 1e6
        run.noise = foreign_cores(before, after)
        run.client_load = sum(r["cpu_s"] for r in results) / (args.duration * len(results))
        run.p50_ms, run.p99_ms = percentiles([x for r in results for x in r["latencies_us"]])
        return run


class Client:
    """One ``stream_client.py --serve`` process, pinned to one client CPU: a run per JSON line."""

    def __init__(self, cpu: str, log_path: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in close)
        command = [sys.executable, os.path.join(BENCH_DIR, "stream_client.py"), "--serve"]
        self.proc = subprocess.Popen(
            pinned(cpu or None, command),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=server_env(),
        )
        self._buf = b""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: read_line says so

    def read_line(self, deadline: float) -> Optional[str]:
        assert self.proc.stdout is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    return None
                self._buf += chunk
            elif self.proc.poll() is not None:
                return None
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def explain(self, line: Optional[str]) -> str:
        """What a client said instead of the expected line."""
        if line:
            try:
                said = json.loads(line)
                return "; ".join(said.get("problems", [])) or line[:200]
            except ValueError:
                return line[:200]
        if self.alive():
            return "no answer in time"
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                tail = f.read().strip().splitlines()
        except OSError:
            tail = []
        return f"exited with status {self.proc.returncode}: " + (tail[-1] if tail else "")

    def abandon(self) -> None:
        """Stop a client whose state is unknown; the pool starts a fresh one when next needed."""
        if self.alive():
            self.proc.kill()
        self.close()

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()  # EOF: it exits
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class ClientPool:
    """The streaming cases' client processes, one per client CPU, kept from run to run."""

    def __init__(self, cpus: List[str], log_dir: str) -> None:
        self.slots = cpus or [""]
        self.log_dir = log_dir
        self._clients: Dict[int, Client] = {}

    def get(self, i: int) -> Client:
        client = self._clients.get(i)
        if client is None or not client.alive() or client._log.closed:
            client = Client(self.slots[i], os.path.join(self.log_dir, f"client-{i}.stderr"))
            self._clients[i] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            if not client._log.closed:
                client.close()
        self._clients.clear()


def cpu_list(spec: str) -> List[str]:
    """'1-3,5' -> ['1', '2', '3', '5']."""
    out: List[str] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += [str(n) for n in range(int(lo), int(hi or lo) + 1)]
    return out


# --------------------------------------------------------------------------- results


@dataclass
class Cell:
    """All runs of one case against one server."""

    runs: List[Run] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    skipped: Optional[str] = None

    @property
    def ok(self) -> bool:
        return bool(self.runs) and not self.problems and self.skipped is None

    def median(self, attr: str) -> Optional[float]:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values and self.ok else None

    @property
    def spread(self) -> Optional[float]:
        """(max - min) / median of the rounds' rates."""
        rates = [r.rate for r in self.runs if r.rate is not None]
        if len(rates) < 2 or not self.ok or not statistics.median(rates):
            return None
        return (max(rates) - min(rates)) / statistics.median(rates)

    @property
    def noisy_runs(self) -> int:
        return sum(1 for r in self.runs if r.noise is not None and r.noise > NOISY_CORES)

    @property
    def coarse_cpu_runs(self) -> int:
        return sum(1 for r in self.runs if r.cpu_s is not None and r.cpu_s * CLK_TCK < COARSE_TICKS)

    @property
    def client_bound_runs(self) -> int:
        return sum(1 for r in self.runs if r.client_load is not None and r.client_load >= CLIENT_BOUND)


def fmt_num(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


class Report:
    def __init__(self, cases: List[Case], servers: List[ServerSpec], spread_limit: float) -> None:
        self.cases = cases
        self.servers = servers
        self.spread_limit = spread_limit
        self.cells: Dict[Tuple[str, str], Cell] = {(c.key, s.name): Cell() for c in cases for s in servers}

    def cell(self, case: Case, server: ServerSpec) -> Cell:
        return self.cells[(case.key, server.name)]

    def flags(self, cell: Cell) -> str:
        mark = ""
        spread = cell.spread
        if cell.noisy_runs or (spread is not None and spread > self.spread_limit):
            mark += "*"
        if cell.client_bound_runs:
            mark += "†"
        return mark

    def value(self, case: Case, server: ServerSpec, attr: str, ratio: bool, lower_better: bool = False) -> str:
        cell = self.cell(case, server)
        if cell.skipped is not None and not cell.runs:
            return "skipped"
        if not cell.ok:
            return "FAILED"
        value = cell.median(attr)
        text = fmt_num(value)
        if attr == "rate":
            text += self.flags(cell)
        elif attr == "cpu_per_unit_us" and cell.coarse_cpu_runs:
            text += "‡"
        base = self.baseline()
        if ratio and base is not None and server is not base and value is not None:
            ref = self.cell(case, base).median(attr)
            if ref:
                text += f" ({value / ref:.2f}x)"
        return text

    def latency(self, case: Case, server: ServerSpec) -> str:
        cell = self.cell(case, server)
        if cell.skipped is not None and not cell.runs:
            return "skipped"
        if not cell.ok:
            return "FAILED"
        return f"{fmt_num(cell.median('p50_ms'))} / {fmt_num(cell.median('p99_ms'))}"

    def baseline(self) -> Optional[ServerSpec]:
        return next((s for s in self.servers if s.name == BASELINE), None)

    def tables(self) -> List[Tuple[str, List[str], List[List[str]]]]:
        titles = ["case", *(s.label for s in self.servers)]
        rate = [[f"{c.label}, {c.unit}", *(self.value(c, s, "rate", True) for s in self.servers)] for c in self.cases]
        cpu = [
            [f"{c.label}, µs per {c.per}", *(self.value(c, s, "cpu_per_unit_us", True) for s in self.servers)]
            for c in self.cases
        ]
        lat = [[c.label, *(self.latency(c, s) for s in self.servers)] for c in self.cases]
        base = self.baseline()
        vs = f" (in brackets: ratio to {base.label})" if base else ""
        out = [
            (f"Throughput, median of the rounds{vs}", titles, rate),
            (f"Server CPU per call or message, from /proc/PID/stat{vs}", titles, cpu),
            ("Latency p50 / p99, ms (per call; bidi: per message round trip)", titles, lat),
        ]
        if any(c.spread is not None for c in self.cells.values()):
            spread = [[c.label, *(self.spread_text(c, s) for s in self.servers)] for c in self.cases]
            out.append(("Spread of the throughput between rounds, (max - min) / median", titles, spread))
        return out

    def spread_text(self, case: Case, server: ServerSpec) -> str:
        cell = self.cell(case, server)
        spread = cell.spread
        if spread is None:
            return "-"
        return f"{spread * 100:.0f}%" + ("*" if spread > self.spread_limit else "")

    def text(self) -> str:
        lines = []
        for case in self.cases:
            lines.append(f"{case.label} ({case.unit}; server CPU µs per {case.per}; latency ms)")
            for s in self.servers:
                cell = self.cell(case, s)
                if cell.skipped is not None and not cell.runs:
                    lines.append(f"  {s.label:<34} skipped: {cell.skipped}")
                    continue
                if not cell.ok:
                    lines.append(f"  {s.label:<34} FAILED")
                    continue
                rates = [r.rate for r in cell.runs if r.rate is not None]
                spread = cell.spread
                spread_text = f"spread {spread * 100:4.1f}%" if spread is not None else "spread   - "
                lines.append(
                    f"  {s.label:<34} {fmt_num(cell.median('rate')):>10} {self.flags(cell):<2}"
                    f" [{fmt_num(min(rates))}-{fmt_num(max(rates))}] {spread_text}"
                    f"  cpu {fmt_num(cell.median('cpu_per_unit_us')):>7}{'‡' if cell.coarse_cpu_runs else ' '}"
                    f"  p50 {fmt_num(cell.median('p50_ms')):>6}  p99 {fmt_num(cell.median('p99_ms')):>6}"
                )
        return "\n".join(lines)

    def markdown(self) -> str:
        out = []
        for caption, titles, rows in self.tables():
            out.append(f"{caption}:\n")
            out.append("| " + " | ".join(titles) + " |")
            out.append("|---" + "|---:" * (len(titles) - 1) + "|")
            out += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("")
        return "\n".join(out)

    def footnotes(self) -> List[str]:
        notes = []
        spreads = [(c.spread, key) for key, c in self.cells.items() if c.spread is not None]
        if spreads:
            worst, (case, server) = max(spreads)
            notes.append(f"Largest spread between rounds: {worst * 100:.0f}% ({case}, {server}).")
        if any("*" in self.flags(c) for c in self.cells.values()):
            notes.append(
                f"\\* noisy: the rounds' rates spread by more than {self.spread_limit * 100:.0f}% of their median,"
                f" or other processes used more than {NOISY_CORES:g} core during a run; unreliable."
            )
        if any(c.client_bound_runs for c in self.cells.values()):
            notes.append(
                f"† client-bound: the client kept {CLIENT_BOUND * 100:.0f}% or more of its CPUs busy in a run;"
                " the server may be faster than shown (more --client-cpu)."
            )
        if any(c.coarse_cpu_runs for c in self.cells.values()):
            notes.append(
                f"‡ coarse: the server used fewer than {COARSE_TICKS} clock ticks"
                f" ({COARSE_TICKS / CLK_TCK:g} s) of CPU in a run, so one tick moves the figure by"
                f" {100 / COARSE_TICKS:g}% or more (longer --duration)."
            )
        return notes

    def as_json(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"cases": {}}
        for case in self.cases:
            per: Dict[str, Any] = {}
            for s in self.servers:
                cell = self.cell(case, s)
                per[s.name] = {
                    "ok": cell.ok,
                    "skipped": cell.skipped,
                    "problems": cell.problems,
                    "rate": cell.median("rate"),
                    "unit": case.unit,
                    "cpu_per_unit_us": cell.median("cpu_per_unit_us"),
                    "cpu_coarse": bool(cell.coarse_cpu_runs),
                    "p50_ms": cell.median("p50_ms"),
                    "p99_ms": cell.median("p99_ms"),
                    "spread": cell.spread,
                    "runs": [r.__dict__ for r in cell.runs],
                }
            out["cases"][case.key] = per
        return out


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions(h2load: Optional[str], servers: List[ServerSpec]) -> str:
    parts = [f"harness and clients: {platform.python_implementation()} {platform.python_version()}"]
    for mod, name in (("grpc", "grpcio"), ("grpclib", "grpclib"), ("google.protobuf", "protobuf")):
        try:
            module = __import__(mod, fromlist=["__version__"])
            parts.append(f"{name} {getattr(module, '__version__', '?')}")
        except ImportError:
            parts.append(f"{name} not installed")
    if h2load:
        try:
            out = subprocess.run([h2load, "--version"], capture_output=True, text=True).stdout
            parts.append(out.strip().splitlines()[0])
        except (OSError, IndexError):
            parts.append("h2load ?")
    runtimes = sorted({f"{s.runtime} ({s.python})" for s in servers if s.runtime and s.python != sys.executable})
    if runtimes:
        parts.append("other server runtimes: " + ", ".join(runtimes))
    return "; ".join(parts)


def default_cpus() -> Tuple[Optional[str], Optional[str]]:
    """Server on the first CPU this process may use, clients on up to 8 others."""
    if shutil.which("taskset") is None:
        return None, None
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if len(allowed) < 2:
        return None, None
    return str(allowed[0]), ",".join(str(c) for c in allowed[1:9])


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--all",
        action="store_true",
        help="every server and every case (the default); not with --servers, --cases or --scenarios",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="every case once against every server, tiny runs: checks that each answers correctly",
    )
    p.add_argument("--duration", type=float, help="seconds measured per run (default 5; --quick 0.4)")
    p.add_argument("--warm-up", type=float, help="seconds of warm-up per run (default 1; --quick 0)")
    p.add_argument("--rounds", type=int, help="rounds (default 3; --quick 1)")
    p.add_argument(
        "--servers",
        help="comma-separated: grpcio, grpcio-aio, grpclib, puregrpc, puregrpc-aio, puregrpc-wN;"
        " NAME@PYTHON runs it under another interpreter (default: the first five)",
    )
    p.add_argument("--cases", help=f"comma-separated (default {DEFAULT_CASES})")
    p.add_argument("--scenarios", help="unary cases only, as CONNSxSTREAMS (e.g. 1x32,8x8); same as --cases unary-...")
    p.add_argument(
        "--runtime",
        default=os.environ.get("PUREGRPC_BENCH_RUNTIME"),
        help="interpreter for the puregrpc servers (e.g. pypy3); env PUREGRPC_BENCH_RUNTIME",
    )
    p.add_argument("--server-cpu", help="taskset CPU list for the servers (default: the first CPU)")
    p.add_argument("--client-cpu", help="taskset CPU list for the clients (default: the next 1 to 8 CPUs)")
    p.add_argument("--client-procs", type=int, default=0, help="at most this many grpc client processes per run")
    p.add_argument("--h2load", default="h2load", help="h2load executable")
    p.add_argument("--spread-limit", type=float, default=0.10, help="spread between rounds that flags a cell")
    p.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        help=f"rerun a run up to N times while other processes use more than {NOISY_CORES:g} core during it",
    )
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="print h2load's output")
    args = p.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (0.4 if args.quick else 5.0)
    args.warm_up = args.warm_up if args.warm_up is not None else (0.0 if args.quick else 1.0)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    started = time.monotonic()
    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    args = parse_args(argv)
    if args.cases and args.scenarios:
        raise SystemExit("give --cases or --scenarios, not both")
    if args.all and (args.servers or args.cases or args.scenarios):
        # It would run every server and case and print the narrower command as its own.
        raise SystemExit("--all runs every server and every case: give it without --servers, --cases or --scenarios")
    args.servers = args.servers or ",".join(SERVER_SCRIPTS)
    spec = args.cases or (",".join(f"unary-{s.strip()}" for s in args.scenarios.split(",")) if args.scenarios else "")
    cases = make_cases(spec or DEFAULT_CASES, args.quick)
    servers = parse_servers(args.servers, args.runtime)

    h2load = shutil.which(args.h2load)
    if h2load is None and any(c.h2load for c in cases):
        raise SystemExit("h2load not found: install Debian's nghttp2-client")
    server_cpu, client_cpu = default_cpus()
    args.server_cpu = args.server_cpu or server_cpu
    args.client_cpu = args.client_cpu or client_cpu
    if (args.server_cpu or args.client_cpu) and shutil.which("taskset") is None:
        raise SystemExit("taskset not found: install util-linux, or run without --server-cpu/--client-cpu")

    gen.generate()
    env = server_env()
    skipped = probe_all(servers, env)
    tell_apart(servers)
    log_dir = tempfile.mkdtemp(prefix="puregrpc-bench-")
    bench = Bench(args, h2load, log_dir)
    report = Report(cases, servers, args.spread_limit)

    pinning = (
        f"servers pinned to CPU {args.server_cpu}, clients to CPU {args.client_cpu} (taskset)"
        if args.server_cpu
        else "no CPU pinning (taskset missing or one CPU)"
    )
    header = [
        f"Command: `{command}`",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; {pinning}",
        f"Versions: {versions(h2load, [s for s in servers if s.name not in skipped])}",
        f"Runs: {args.rounds} round(s); each run {args.warm_up:g} s warm-up, {args.duration:g} s measured"
        + (" (--quick: unary runs of 100+ requests instead)" if args.quick else ""),
    ]
    for line in header:
        print("# " + line)
    print(f"# logs in {log_dir}")
    for name, why in skipped.items():
        print(f"# skipped {name}: {why}")
    print(flush=True)

    for cell_key, cell in report.cells.items():
        if cell_key[1] in skipped:
            cell.skipped = "not available"
    broken: Dict[str, str] = {}  # server -> why it is not run any more
    notes: List[str] = []
    active = [s for s in servers if s.name not in skipped]
    try:
        for rnd in range(1, args.rounds + 1):
            order = active[(rnd - 1) % len(active) :] + active[: (rnd - 1) % len(active)] if active else []
            running = start_servers([s for s in order if s.name not in broken], args, log_dir, f"r{rnd}", broken, notes)
            problems = check_servers({n: p.port for n, p in running.items() if p.port}, bench.clients)
            for name, why in problems.items():
                fail_server(name, why, "failed check", running, broken, notes, rnd)
            for case in cases:
                for spec in order:
                    cell = report.cell(case, spec)
                    if spec.name in broken:
                        cell.skipped = broken[spec.name]
                        continue
                    server = running[spec.name]
                    prefix = f"round {rnd}/{args.rounds}  {case.key:<10} {spec.name:<14}"
                    if not server.alive():
                        why = f"server had exited (status {server.proc.returncode})\n{indent(server.stderr_tail())}"
                        cell.problems.append(why)
                        notes.append(f"{spec.name} {case.key} round {rnd}: {why}")
                        print(f"{prefix}  FAILED: {why}", flush=True)
                        server.stop()
                        again = start_servers([spec], args, log_dir, f"r{rnd}-{case.key}", broken, notes)
                        if spec.name in again:
                            running[spec.name] = again[spec.name]
                        continue
                    for attempt in range(args.retry_noisy + 1):
                        run = bench.measure(server, case, f"r{rnd}-{re.sub(r'[^A-Za-z0-9_.-]', '_', spec.name)}")
                        if run.problems or run.noise is None or run.noise <= NOISY_CORES:
                            break  # a failed run is never retried: failures must show, noisy or not
                        if attempt < args.retry_noisy:
                            print(f"{prefix}  noisy ({run.noise:.2f} cores used by others), rerun", flush=True)
                    if not server.alive():
                        run.problems.append(f"server exited during the run (status {server.proc.returncode})")
                    cell.runs.append(run)
                    print(f"{prefix}  {run_text(run, case)}", flush=True)
                    if run.problems:
                        why = "; ".join(run.problems)
                        tail = server.stderr_tail()
                        cell.problems.append(why)
                        tail = f"\n{indent(tail)}" if tail else ""
                        notes.append(f"{spec.name} {case.key} round {rnd}: {why}{tail}")
            alive = {n: p.port for n, p in running.items() if p.port and p.alive()}
            for name, why in check_servers(alive, bench.clients).items():
                notes.append(f"{name} round {rnd}: after the cases, {why}")
                for case in cases:
                    report.cell(case, next(s for s in servers if s.name == name)).problems.append(why)
            for server in running.values():
                server.terminate()
            for name, server in running.items():
                note = server.stop()
                if note:
                    notes.append(f"{name} round {rnd}: {note}")
    finally:
        bench.clients.close()
        for server in STARTED:
            if server.alive():
                server.stop()
    elapsed = time.monotonic() - started
    print()
    print(report.text())
    if notes:
        print("\nProblems:")
        for n in notes:
            print(f"  - {n}")
    print(f"\nTotal time: {elapsed:.0f} s\n")
    print("\n".join(header[:3]) + "\n")
    print(header[3].replace("Runs: ", "") + ".\n")
    print(report.markdown())
    for note in report.footnotes():
        print(note)
    if skipped:
        print("Skipped: " + "; ".join(f"{n} ({why})" for n, why in skipped.items()))
    if args.json:
        data = report.as_json()
        data.update(command=command, header=header, skipped=skipped, notes=notes, elapsed_s=elapsed)
        data["servers"] = {s.name: {"label": s.label, "runtime": s.runtime, "python": s.python} for s in servers}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
    all_ok = all(c.ok for key, c in report.cells.items() if key[1] not in skipped)
    return 0 if all_ok else 1


def start_servers(
    specs: List[ServerSpec],
    args: argparse.Namespace,
    log_dir: str,
    tag: str,
    broken: Dict[str, str],
    notes: List[str],
) -> Dict[str, ServerProcess]:
    """Start the servers side by side; those that do not come up are marked broken."""
    procs = {s.name: ServerProcess(s, args.server_cpu, log_dir, tag) for s in specs}
    STARTED.extend(procs.values())
    deadline = time.monotonic() + START_TIMEOUT
    for name, proc in list(procs.items()):
        why = proc.wait_ready(deadline)
        if why is not None:
            fail_server(name, why, "failed to start", procs, broken, notes, tag)
    return procs


def fail_server(
    name: str,
    why: str,
    what: str,
    procs: Dict[str, ServerProcess],
    broken: Dict[str, str],
    notes: List[str],
    when: object,
) -> None:
    proc = procs.pop(name)
    tail = proc.stderr_tail()
    proc.stop()
    broken[name] = what
    print(f"{name}: {what.upper()}: {why}" + (f"\n{indent(tail)}" if tail else ""), flush=True)
    notes.append(f"{name}: {what} ({when}): {why}")


def run_text(run: Run, case: Case) -> str:
    if run.problems:
        return "FAILED: " + "; ".join(run.problems)
    text = f"{fmt_num(run.rate):>10} {case.unit:<5}  cpu {fmt_num(run.cpu_per_unit_us):>7} µs/{case.per}"
    text += f"  p50 {fmt_num(run.p50_ms)} p99 {fmt_num(run.p99_ms)} ms"
    if run.noise is not None:
        text += f"  others {run.noise:.2f} cores" + (" NOISY" if run.noise > NOISY_CORES else "")
    if run.client_load is not None and run.client_load >= CLIENT_BOUND:
        text += f"  client {run.client_load * 100:.0f}% busy"
    return text


def indent(text: str, prefix: str = "      | ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


if __name__ == "__main__":
    sys.exit(main())
