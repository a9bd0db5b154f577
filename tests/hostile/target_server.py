"""The server under attack, run as a subprocess so that its memory, threads and file
descriptors are its own.

It serves ``hostile.Target`` with ``integration._support.serve`` and answers commands
on stdin, one per line, on its main thread (never through the handler pool, so a
saturated pool cannot hide its figures):

    stats   one JSON line: server.stats() counters, handlers running and run (by method), threads,
            open file descriptors, RSS (after gc.collect() and glibc's malloc_trim(0))
    quit    stop the server and exit (as does end of input)

Arguments: ``--workers N``, ``--max-handshaking N``, ``--option NAME=INT`` (repeatable).
The first line on stdout is ``PORT <n>``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Tuple

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from integration._support import serve

import puregrpc
from puregrpc import _connection

SERVICE = "hostile.Target"
PAGE = os.sysconf("SC_PAGE_SIZE")


class Handlers:
    """Counts handlers running and run, so a leaked (never-ending) handler shows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.total = 0
        self.by_method: Dict[str, int] = {}

    def _enter(self, name: str) -> None:
        with self.lock:
            self.running += 1
            self.total += 1
            self.by_method[name] = self.by_method.get(name, 0) + 1

    def counted(self, fn: Any) -> Any:
        def wrapper(request: Any, context: Any) -> Any:
            self._enter(fn.__name__)
            try:
                return fn(request, context)
            finally:
                with self.lock:
                    self.running -= 1

        return wrapper

    def counted_stream(self, fn: Any) -> Any:
        def wrapper(request: Any, context: Any) -> Iterator[Any]:
            self._enter(fn.__name__)
            try:
                yield from fn(request, context)
            finally:
                with self.lock:
                    self.running -= 1

        return wrapper


def echo(request: bytes, context: Any) -> bytes:
    return request


def big(request: bytes, context: Any) -> bytes:
    """A response of ``int(request)`` bytes."""
    return b"b" * int(request.decode() or "0")


def hold(request: bytes, context: Any) -> bytes:
    """Wait until the call ends (client gone, deadline) or 30 s pass."""
    end = time.monotonic() + float(request.decode() or "30")
    while context.is_active() and time.monotonic() < end:
        time.sleep(0.01)
    return b"held"


def drip(request: bytes, context: Any) -> Iterator[bytes]:
    """1 KiB messages every 5 ms until the call ends."""
    chunk = b"d" * 1024
    while context.is_active():
        yield chunk
        time.sleep(0.005)


def upload(requests: Iterator[bytes], context: Any) -> bytes:
    return str(sum(len(r) for r in requests)).encode()


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _malloc_trim() -> Any:
    """glibc's malloc_trim, to hand freed memory back to the OS before RSS is read (so
    that RSS shows what is live, not what the allocator keeps); None elsewhere."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


TRIM = _malloc_trim()


def snapshot(server: puregrpc.Server, handlers: Handlers) -> Dict[str, Any]:
    gc.collect()
    if TRIM is not None:
        TRIM(0)
    stats = server.stats()
    with handlers.lock:
        running, total, by_method = handlers.running, handlers.total, dict(handlers.by_method)
    return {
        "rpcs_started": stats.rpcs_started,
        "rpcs_finished": stats.rpcs_finished,
        "rpcs_in_flight": stats.rpcs_in_flight,
        "connections": stats.connections,
        "connections_total": stats.connections_total,
        "streams_refused": stats.streams_refused,
        "handlers_running": running,
        "handlers_total": total,
        "handlers_by_method": by_method,
        "threads": threading.active_count(),
        "fds": len(os.listdir("/proc/self/fd")),
        "rss": rss(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--max-handshaking", type=int, default=None)
    parser.add_argument("--option", action="append", default=[])
    args = parser.parse_args()
    if args.max_handshaking is not None:
        _connection.MAX_HANDSHAKING = args.max_handshaking
    options: List[Tuple[str, int]] = []
    for item in args.option:
        name, _, value = item.partition("=")
        options.append((name, int(value)))
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    except (ImportError, ValueError, OSError):
        pass

    counts = Handlers()
    methods = {
        "Echo": puregrpc.unary_unary_rpc_method_handler(counts.counted(echo)),
        "Big": puregrpc.unary_unary_rpc_method_handler(counts.counted(big)),
        "Hold": puregrpc.unary_unary_rpc_method_handler(counts.counted(hold)),
        "Drip": puregrpc.unary_stream_rpc_method_handler(counts.counted_stream(drip)),
        "Upload": puregrpc.stream_unary_rpc_method_handler(counts.counted(upload)),
    }
    handlers = [puregrpc.method_handlers_generic_handler(SERVICE, methods)]
    with serve(handlers=handlers, workers=args.workers, options=options) as running:
        # Start every handler thread now, so that later counts compare like with like.
        for _ in range(args.workers):
            running.pool.submit(time.sleep, 0.2)
        time.sleep(0.3)
        print(f"PORT {running.port}", flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "stats":
                print(json.dumps(snapshot(running.server, counts)), flush=True)
            elif command == "quit":
                break


if __name__ == "__main__":
    main()
