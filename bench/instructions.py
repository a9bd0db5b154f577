"""Instructions per message or call, counted by valgrind: a CPU figure without the noise.

    python bench/instructions.py                                    # puregrpc and puregrpc.aio, bidi and unary-1x32
    python bench/instructions.py --servers puregrpc-aio,puregrpc-aio@OLD --cases bidi

On a shared machine, run.py's CPU figures move 10-50% between rounds, more than most
changes to the hot path. This runs each server under ``valgrind --tool=callgrind``, which
counts the instructions the process executes, and feeds it a fixed load twice, small and
large (``--units``). The difference between the two runs, divided by the difference in
messages or calls, is the server's instructions per message or call: start-up, imports,
connecting and stopping cancel out. Two runs of the same code agree to 1-2%.

What it does not count: the kernel's work (system calls, waking threads, switching
between them). A change that adds thread wake-ups can lower this figure and still cost
more CPU (see bench/README.md): read it beside run.py's figures, never instead of them.

Loads (the client is this process, not counted): ``bidi``: 8 streams of grpcio's sync
client, each N ping-pongs of 100 bytes, every echo checked; ``unary-CxM``: h2load, N unary
calls of 100 bytes, C connections x M streams, every reply's DATA counted. Servers are
run.py's (``NAME@PYTHON`` runs one under another interpreter, or a script that sets
PYTHONPATH to an older tree and execs one: valgrind follows it). Needs Debian's
``valgrind``, and ``nghttp2-client`` for the unary cases.
"""

from __future__ import annotations

import argparse
import glob
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterator, List, Tuple

import gen
import run

START_TIMEOUT = 300.0  # seconds for a server to print its port under valgrind
STREAMS = 8


def count_instructions(out_dir: str) -> int:
    """The instructions of every process callgrind traced (the server, and any wrapper)."""
    total = 0
    for path in glob.glob(os.path.join(out_dir, "callgrind.*")):
        with open(path) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    total += int(line.split()[1])
                    break
    return total


def start_server(spec: run.ServerSpec, out_dir: str, log: Any) -> Tuple[subprocess.Popen[bytes], int]:
    command = [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--callgrind-out-file={os.path.join(out_dir, 'callgrind.%p')}",
        spec.python,
        os.path.join(run.BENCH_DIR, run.SERVER_SCRIPTS[spec.base]),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=run.server_env())
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the port, or EOF if it died
    try:
        return proc, int(line)
    except ValueError:
        proc.kill()
        proc.wait()
        raise SystemExit(f"{spec.name}: printed {line[:80]!r} instead of a port (log: {log.name})") from None


def bidi_load(port: int, count: int) -> None:
    """STREAMS bidi calls at once, ``count`` ping-pongs each; every echo checked."""
    import grpc  # type: ignore[import-untyped,unused-ignore]

    pb2, pb2_grpc = gen.load()
    problems: List[str] = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT)
        stub = pb2_grpc.EchoStub(channel)

        def one(stream: int) -> None:
            turn: queue.Queue[None] = queue.Queue()

            def requests() -> Iterator[Any]:
                for seq in range(count):
                    yield pb2.EchoMsg(payload=bytes([stream]) * gen.PAYLOAD_SIZE, seq=seq)
                    turn.get()  # the echo first: one message in flight

            seen = 0
            try:
                for echo in stub.Bidi(requests(), timeout=START_TIMEOUT):
                    if echo.seq != seen or echo.payload != bytes([stream]) * gen.PAYLOAD_SIZE:
                        problems.append(f"stream {stream}: a wrong echo at {seen}")
                    seen += 1
                    turn.put(None)
            except grpc.RpcError as exc:
                problems.append(f"stream {stream}: {exc.code()} after {seen} echoes")
                return
            if seen != count:
                problems.append(f"stream {stream}: {seen} echoes, {count} expected")

        threads = [threading.Thread(target=one, args=(stream,)) for stream in range(STREAMS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if problems:
        raise SystemExit("bidi: " + "; ".join(problems[:5]))


def unary_load(port: int, count: int, connections: int, streams: int, h2load: str, body_file: str) -> None:
    command = [h2load, "-n", str(count), f"-c{connections}", f"-m{streams}", "-d", body_file]
    command += [
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://127.0.0.1:{port}{gen.METHOD_PATH}",
    ]
    output = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT).stdout
    result, problems = run.parse_h2load(output, len(gen.request_body()))
    if problems or result["succeeded"] != count:
        raise SystemExit(f"unary: {result['succeeded']} of {count} succeeded; {'; '.join(problems)}")


def measure(spec: run.ServerSpec, case: str, units: int, options: argparse.Namespace, body_file: str) -> int:
    """The server's instructions from start to stop, with ``units`` of load in between."""
    with tempfile.TemporaryDirectory(prefix="puregrpc-callgrind-") as out_dir:
        log_path = os.path.join(out_dir, "server.log")
        with open(log_path, "wb") as log:
            proc, port = start_server(spec, out_dir, log)
            try:
                if case == "bidi":
                    bidi_load(port, units)
                else:
                    connections, streams = unary_shape(case)
                    unary_load(port, units, connections, streams, options.h2load, body_file)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=START_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        total = count_instructions(out_dir)
        if not total:
            raise SystemExit(f"{spec.name}: callgrind wrote no counts (its log: valgrind's stderr)")
        return total


def unary_shape(case: str) -> Tuple[int, int]:
    m = re.fullmatch(r"unary-([1-9][0-9]*)x([1-9][0-9]*)", case)
    if not m:
        raise SystemExit(f"unknown case {case!r}: bidi or unary-CxM")
    return int(m.group(1)), int(m.group(2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default="puregrpc,puregrpc-aio", help="as run.py's: NAME or NAME@PYTHON")
    parser.add_argument("--cases", default="bidi,unary-1x32", help="bidi, unary-CxM")
    parser.add_argument(
        "--units",
        default="20,220",
        help="the small and the large load: ping-pongs per stream (bidi; x8 streams) or calls / 10 (unary)",
    )
    parser.add_argument("--h2load", default=shutil.which("h2load") or "h2load")
    options = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind not found (Debian's valgrind)")
    small, large = (int(x) for x in options.units.split(","))
    if not 0 < small < large:
        raise SystemExit("--units: two counts, the first smaller")
    specs = run.parse_servers(options.servers, None)
    cases = [c for c in options.cases.split(",") if c]
    for case in cases:
        if case != "bidi":
            unary_shape(case)
    with tempfile.NamedTemporaryFile(suffix=".bin") as body:
        body.write(gen.request_body())
        body.flush()
        python = sys.version.split()[0]
        print(f"callgrind instructions per message (bidi) or call (unary), units {options.units}, Python {python}")
        for case in cases:
            scale = STREAMS if case == "bidi" else 10
            what = "message" if case == "bidi" else "call"
            for spec in specs:
                started = time.monotonic()
                low = measure(spec, case, small * (1 if case == "bidi" else 10), options, body.name)
                high = measure(spec, case, large * (1 if case == "bidi" else 10), options, body.name)
                per = (high - low) / ((large - small) * scale)
                took = time.monotonic() - started
                print(
                    f"{case:12} {spec.name:40} {per / 1000:9.1f} k instructions per {what}   ({took:.0f} s)", flush=True
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
