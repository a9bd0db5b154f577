"""Rolling restarts under load: how many calls fail while ``--workers`` replace themselves.

Runs ``puregrpc serve pid_service:register --workers 2`` (the service of
tests/lifecycle), then calls it from threads with grpcio's client, with no retry
policy: one caller on one channel for the whole run (it reconnects after each GOAWAY)
and ``--fresh`` callers that open a new channel, so a new connection, for every call.
Every ``--every`` seconds it sends the supervisor SIGHUP (a rolling restart), then it
drains the lot with SIGTERM and prints every failed call, with its status and how
long it took, and the supervisor's exit status. A call that hangs shows as
DEADLINE_EXCEEDED after ``--deadline`` seconds.

    python bench/rolling_restart.py --restarts 40 --fresh 5

The supervisor's log (and its workers') goes to ``--log`` (default: a file in the
temporary folder), for looking up what happened at the time of a failure.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional, Tuple

import grpc

SERVICE_DIR = pathlib.Path(__file__).resolve().parent.parent / "tests" / "lifecycle"
FRESH = [("grpc.use_local_subchannel_pool", 1)]  # a new channel gets its own connection


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Caller(threading.Thread):
    def __init__(self, target: str, fresh: bool, deadline: float, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.target, self.fresh, self.deadline, self.stop = target, fresh, deadline, stop
        self.calls = 0
        self.failures: List[Tuple[float, float, str]] = []  # (wall time, seconds taken, status: details)

    def run(self) -> None:
        channel: Optional[grpc.Channel] = None if self.fresh else grpc.insecure_channel(self.target)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if channel is None:
                    with grpc.insecure_channel(self.target, options=FRESH) as fresh:
                        fresh.unary_unary("/lifecycle.Pid/Get")(b"", timeout=self.deadline)
                else:
                    channel.unary_unary("/lifecycle.Pid/Get")(b"", timeout=self.deadline)
                self.calls += 1
            except grpc.RpcError as err:
                took = time.monotonic() - started
                self.failures.append((time.time(), took, f"{err.code().name}: {err.details()}"))
        if channel is not None:
            channel.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=20)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between SIGHUPs")
    parser.add_argument("--fresh", type=int, default=3, help="callers opening a new connection per call")
    parser.add_argument("--deadline", type=float, default=15.0)
    parser.add_argument("--log", default=os.path.join(tempfile.gettempdir(), "rolling_restart.log"))
    args = parser.parse_args()

    target = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONPATH=str(SERVICE_DIR))
    argv = [sys.executable, "-m", "puregrpc", "serve", "pid_service:register", "--address", target]
    argv += ["--workers", "2", "--grace", "10"]
    with open(args.log, "w") as log:
        supervisor = subprocess.Popen(argv, stderr=log, env=env, cwd=SERVICE_DIR)
        time.sleep(3.0)  # both workers up
        stop = threading.Event()
        callers = [Caller(target, False, args.deadline, stop)]
        callers += [Caller(target, True, args.deadline, stop) for _ in range(args.fresh)]
        for caller in callers:
            caller.start()
        for n in range(args.restarts):
            time.sleep(1.0)
            supervisor.send_signal(signal.SIGHUP)
            time.sleep(args.every - 1.0)
            failed = sum(len(c.failures) for c in callers)
            print(
                f"restart {n + 1}/{args.restarts}: {sum(c.calls for c in callers)} calls, {failed} failed", flush=True
            )
        stop.set()
        for caller in callers:
            caller.join(args.deadline + 5)
        supervisor.send_signal(signal.SIGTERM)
        try:
            code: Optional[int] = supervisor.wait(30)
        except subprocess.TimeoutExpired:
            supervisor.kill()
            code = None
    calls = sum(c.calls for c in callers)
    failures = sorted((f, "fresh" if c.fresh else "one channel") for c in callers for f in c.failures)
    print(f"\n{args.restarts} restarts, {calls} calls, {len(failures)} failed; supervisor exit status {code}")
    for (when, took, what), kind in failures[:50]:
        print(f"  {time.strftime('%H:%M:%S', time.gmtime(when))} UTC  {kind}  after {took:.3f}s  {what}")
    print(f"log: {args.log}")
    return 0 if not failures and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
