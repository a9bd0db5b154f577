"""How often grpcio's client fails a call that meets a server's graceful GOAWAY.

Each server in turn (grpcio's sync server, puregrpc, puregrpc.aio) closes every
connection gracefully after ``--age`` seconds (``grpc.max_connection_age_ms``, gRFC A9).
Client threads (grpcio) on ``--channels`` channels make unary echo calls for
``--seconds``; one in ``--large-every`` carries a 1 MiB request. The script counts the
calls that failed, by size, first with the client's default options and then with
``grpc.per_rpc_retry_buffer_size`` set above the large request (``--retry-buffer``).

Why: a channel can start a call on a connection that has just read a GOAWAY (its load
balancer has not yet moved away from it). grpc-core then fails the call with UNAVAILABLE
"GOAWAY received" before any byte of it is sent, and retries it transparently on another
connection only while it is not committed: a call whose request is larger than the retry
buffer (256 KiB by default) is committed at once, so the failure reaches the caller. A
server cannot prevent it; the client's retry buffer can. The same happens with
grpcio's own server, which is what the comparison shows.

    python bench/goaway_race.py --seconds 30

Prints, for each server and client setting: the connections the server saw (sockets
sampled every 5 ms; each connection is one drain), the calls made and the calls failed
(small / large), with the first failure's message.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

MiB = 1 << 20
METHOD = "/race.Echo/Echo"
SERVERS = ("grpcio", "puregrpc", "puregrpc.aio")


def _serve(kind: str, port_file: str, age: float) -> None:
    """Serve the echo method with connection age ``age`` until stdin closes, then print
    how many sockets the process had (the connections, plus a few of its own)."""
    stop = threading.Event()
    seen: Set[str] = set()
    threading.Thread(target=_count_connections, args=(stop, seen), daemon=True).start()
    try:
        _serve_until_stdin_closes(kind, port_file, age)
    finally:
        stop.set()
        print(f"sockets {len(seen) if seen else '?'}", flush=True)


def _serve_until_stdin_closes(kind: str, port_file: str, age: float) -> None:
    options = [("grpc.max_connection_age_ms", int(age * 1000)), ("grpc.max_connection_age_grace_ms", 30_000)]
    options += [("grpc.max_receive_message_length", 4 * MiB)]
    if kind == "puregrpc.aio":
        import asyncio

        import puregrpc.aio

        async def echo_async(request: bytes, context: Any) -> bytes:
            return request

        async def main() -> None:
            server = puregrpc.aio.server(options=options)
            handler = puregrpc.unary_unary_rpc_method_handler(echo_async)
            server.add_generic_rpc_handlers((puregrpc.method_handlers_generic_handler("race.Echo", {"Echo": handler}),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            _announce(port_file, port)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            await server.stop(None)

        asyncio.run(main())
        return
    from concurrent import futures

    lib: Any = importlib.import_module("grpc" if kind == "grpcio" else "puregrpc")

    def echo(request: bytes, context: Any) -> bytes:
        return request

    server = lib.server(futures.ThreadPoolExecutor(max_workers=16), options=options)
    handler = lib.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers((lib.method_handlers_generic_handler("race.Echo", {"Echo": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    _announce(port_file, port)
    sys.stdin.read()
    server.stop(None)


def _count_connections(stop: threading.Event, seen: Set[str]) -> None:
    """Sample this process's sockets every 5 ms: a connection lives for ``--age``, far
    longer, so each one is seen (its inode), whichever server accepted it."""
    if not os.path.isdir("/proc/self/fd"):
        return  # not Linux: no count ("?")
    while not stop.wait(0.005):
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:"):
                seen.add(target)


def _announce(port_file: str, port: int) -> None:
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(port_file + ".tmp", port_file)


def _start(kind: str, age: float) -> Tuple[subprocess.Popen[str], int]:
    port_file = os.path.join(tempfile.mkdtemp(prefix="goaway-race-"), "port")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, port_file, str(age)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(port_file):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the {kind} server did not start")
        time.sleep(0.05)
    with open(port_file) as f:
        return process, int(f.read())


def _run(port: int, args: argparse.Namespace, retry_buffer: Optional[int]) -> Dict[str, Any]:
    import grpc

    options: List[Tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if retry_buffer is not None:
        options.append(("grpc.per_rpc_retry_buffer_size", retry_buffer))
    channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=options) for _ in range(args.channels)]
    lock = threading.Lock()
    made = {"small": 0, "large": 0}
    failed = {"small": 0, "large": 0}
    first: List[str] = []
    stop_at = time.monotonic() + args.seconds

    def worker(index: int) -> None:
        call = channels[index % len(channels)].unary_unary(METHOD)
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            size = "large" if n % args.large_every == 0 else "small"
            request = (b"%d-%d-" % (index, n)) * ((MiB if size == "large" else 100) // 8)
            try:
                ok = call(request, timeout=10) == request
                error = None if ok else "wrong reply"
            except grpc.RpcError as exc:
                error = f"{exc.code()} {exc.details()}"
            with lock:
                made[size] += 1
                if error is not None:
                    failed[size] += 1
                    if not first:
                        first.append(f"{size}: {error}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for channel in channels:
        channel.close()
    return {"made": made, "failed": failed, "first": first[0] if first else ""}


def main(argv: Optional[List[str]] = None) -> int:
    if argv is None and len(sys.argv) == 5 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], sys.argv[3], float(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated, of " + ", ".join(SERVERS))
    parser.add_argument("--age", type=float, default=0.2, help="max connection age, seconds")
    parser.add_argument("--seconds", type=float, default=30.0, help="per server and client setting")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--large-every", type=int, default=4, help="one call in this many sends 1 MiB")
    parser.add_argument("--retry-buffer", type=int, default=4 * MiB, help="the second run's per_rpc_retry_buffer_size")
    args = parser.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    for kind in servers:
        if kind not in SERVERS:
            parser.error(f"unknown server {kind!r}")
    print(f"age {args.age} s, {args.seconds} s each, {args.threads} threads on {args.channels} channels", flush=True)
    for kind in servers:
        for retry_buffer in (None, args.retry_buffer):
            process, port = _start(kind, args.age)
            try:
                result = _run(port, args, retry_buffer)
            finally:
                assert process.stdin is not None and process.stdout is not None
                process.stdin.close()
                out = process.stdout.read()
                process.wait(timeout=60)
            sockets = out.split()[-1] if out.startswith("sockets") else "?"
            setting = "default retry buffer" if retry_buffer is None else f"retry buffer {retry_buffer >> 20} MiB"
            made, failed = result["made"], result["failed"]
            print(
                f"{kind:13} {setting:21} connections {sockets:>5}   "
                f"calls {made['small']:6} small {made['large']:5} large   "
                f"failed {failed['small']:3} small {failed['large']:3} large   {result['first']}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
