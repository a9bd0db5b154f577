"""The floor under a ping-pong message's server CPU: the hand-offs alone, no HTTP/2, no gRPC.

    python bench/handoff_bench.py                   # every model, 8 connections, 5 s each
    python bench/handoff_bench.py --models thread --connections 8 --duration 5
    python bench/handoff_bench.py --loop uvloop      # the server on uvloop (installed)

A client process (pinned to --client-cpu) keeps one 100-byte message in flight on each of
--connections TCP connections and waits for its echo, as the ``bidi`` case of run.py does
over gRPC. The server process (pinned to --server-cpu) echoes each message in one of
three ways, the three ways puregrpc's servers hand a message to a handler:

- ``loop``: in ``data_received``, on the asyncio loop (no hand-off at all: the floor of
  asyncio's own socket I/O);
- ``task``: to one asyncio task per connection, woken by a future (as ``puregrpc.aio``
  hands a message to an ``async def`` handler);
- ``thread``: to one thread per connection, woken through a ``threading.Condition``; the
  echo goes back to the loop through puregrpc's own ``LoopIO.post`` (a deque, and one
  ``call_soon_threadsafe`` per burst), as ``puregrpc.server`` hands a message to a sync
  handler on its pool.

It prints, per model, messages per second, the server's CPU per message, and its context
switches per message (``getrusage``). The difference between ``thread`` and ``loop`` is
what any server that runs sync handlers on threads under CPython's GIL pays per message
before it parses a byte; compare it with run.py's bidi figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
from typing import Any, Deque, Dict, List, Optional

from puregrpc._loop import LoopIO

SIZE = 100
MODELS = ("loop", "task", "thread")


# -- server -------------------------------------------------------------------------------
class Echo(asyncio.Protocol):
    """Cuts the stream into SIZE-byte messages and hands each to ``deliver``."""

    def __init__(self, model: str, io: LoopIO) -> None:
        self.model = model
        self.io = io
        self.buffer = b""
        self.transport: Any = None
        self.inbox: Deque[bytes] = collections.deque()
        self.waiter: Optional[asyncio.Future[None]] = None
        self.cond = threading.Condition()
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.model == "task":
            asyncio.get_running_loop().create_task(self.task_echo())
        elif self.model == "thread":
            threading.Thread(target=self.thread_echo, daemon=True).start()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        while len(buffer) >= SIZE:
            message, buffer = buffer[:SIZE], buffer[SIZE:]
            if self.model == "loop":
                self.transport.write(message)
            elif self.model == "task":
                self.inbox.append(message)
                waiter = self.waiter
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            else:
                with self.cond:
                    self.inbox.append(message)
                    self.cond.notify()
        self.buffer = buffer

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        with self.cond:
            self.cond.notify()

    async def task_echo(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            if not self.inbox:
                self.waiter = loop.create_future()
                await self.waiter
                self.waiter = None
                continue
            self.transport.write(self.inbox.popleft())

    def thread_echo(self) -> None:
        while True:
            with self.cond:
                while not self.inbox and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                message = self.inbox.popleft()
            self.io.post(self.write, message)

    def write(self, message: bytes) -> None:
        if not self.closed:
            self.transport.write(message)


def serve(model: str, loop_name: str) -> None:
    if loop_name == "uvloop":
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        io = LoopIO()  # puregrpc's own hand-back to the loop: one wake-up per burst
        io.attach(loop, threading.current_thread())
        server = await loop.create_server(lambda: Echo(model, io), "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:  # "mark" prints this process's CPU and context switches; EOF ends it
            line = await reader.readline()
            if not line:
                return
            usage = resource.getrusage(resource.RUSAGE_SELF)
            figures = [usage.ru_utime + usage.ru_stime, usage.ru_nvcsw + usage.ru_nivcsw]
            print(json.dumps(figures), flush=True)

    asyncio.run(main())


# -- client -------------------------------------------------------------------------------
def client(port: int, connections: int, seconds: float) -> None:
    """Ping-pong on every connection; prints the echoes counted in ``seconds`` after "go"."""

    async def main() -> None:
        counted = [0]
        counting = [False]
        stop = [False]

        async def one() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            message = bytes(range(SIZE))
            while not stop[0]:
                writer.write(message)
                echo = await reader.readexactly(SIZE)
                if echo != message:
                    print(f"wrong echo: {echo!r}", file=sys.stderr, flush=True)
                    os._exit(1)
                if counting[0]:
                    counted[0] += 1
            writer.close()

        tasks = [asyncio.ensure_future(one()) for _ in range(connections)]
        await asyncio.sleep(1.0)  # warm-up
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        counting[0] = True
        await asyncio.sleep(seconds)
        counting[0] = False
        print(json.dumps(counted[0]), flush=True)
        stop[0] = True
        await asyncio.gather(*tasks)

    asyncio.run(main())


# -- driver -------------------------------------------------------------------------------
def pinned(cpu: str, args: List[str]) -> subprocess.Popen[str]:
    command = [sys.executable, __file__, *args]
    if cpu:
        command = ["taskset", "-c", cpu, *command]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def measure(model: str, options: argparse.Namespace) -> Dict[str, float]:
    server = pinned(options.server_cpu, ["--serve", model, "--loop", options.loop])
    assert server.stdin is not None and server.stdout is not None
    port = int(server.stdout.readline())
    load = pinned(options.client_cpu, ["--client", str(port), str(options.connections), str(options.duration)])
    assert load.stdin is not None and load.stdout is not None
    try:
        if load.stdout.readline().strip() != "ready":
            raise SystemExit("the client did not start")
        server.stdin.write("mark\n")
        server.stdin.flush()
        before = json.loads(server.stdout.readline())
        load.stdin.write("go\n")
        load.stdin.flush()
        line = load.stdout.readline()
        if not line:  # it exits on a wrong echo (or a lost connection), saying why on stderr
            raise SystemExit(f"{model}: the client failed, exit status {load.wait()}")
        messages = json.loads(line)
        server.stdin.write("mark\n")
        server.stdin.flush()
        after = json.loads(server.stdout.readline())
    finally:
        load.stdin.close()
        load.wait()
        server.stdin.close()
        server.wait()
    if messages <= 0:
        raise SystemExit(f"{model}: no echoes counted")
    return {
        "msg/s": messages / options.duration,
        "cpu_us": (after[0] - before[0]) * 1e6 / messages,
        "switches": (after[1] - before[1]) / messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    parser.add_argument("--server-cpu", default=str(cpus[0]) if cpus else "")
    parser.add_argument("--client-cpu", default=str(cpus[-1]) if len(cpus) > 1 else "")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the server's event loop")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve:
        serve(options.serve, options.loop)
        return
    if options.client:
        client(int(options.client[0]), int(options.client[1]), float(options.client[2]))
        return
    models = [m for m in options.models.split(",") if m]
    for model in models:
        if model not in MODELS:
            parser.error(f"unknown model {model!r}")
    print(
        f"ping-pong, {SIZE} B, {options.connections} connections, {options.duration:g} s x {options.rounds} rounds,"
        f" {options.loop} ({platform.python_implementation()} {platform.python_version()})"
    )
    print(f"{'model':8} {'msg/s':>9} {'server CPU µs/msg':>18} {'context switches/msg':>21}")
    results: Dict[str, List[Dict[str, float]]] = {m: [] for m in models}
    for _ in range(options.rounds):
        for model in models:  # in alternation: a slow phase of the machine hits every model
            results[model].append(measure(model, options))
    for model in models:
        runs = results[model]
        rate = statistics.median(r["msg/s"] for r in runs)
        cpu = statistics.median(r["cpu_us"] for r in runs)
        switches = statistics.median(r["switches"] for r in runs)
        spread = (max(r["cpu_us"] for r in runs) - min(r["cpu_us"] for r in runs)) / cpu
        print(f"{model:8} {rate:9,.0f} {cpu:18.1f} {switches:21.2f}   (CPU spread {spread:.0%})")


if __name__ == "__main__":
    main()
