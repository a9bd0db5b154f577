"""Soak test: many unary calls, streamed messages and uploads against one puregrpc
server, with cancellations, deadlines, aborts and vanishing clients mixed in; the
server's memory, threads, tasks, file descriptors and in-flight counters are sampled as
it runs.

    python bench/soak.py                 # a million unary calls and a million streamed messages
    python bench/soak.py --quick         # ~15 s of load (at most 15), for CI (tests/hostile/test_soak_quick.py)
    python bench/soak.py --unary 200000 --messages 200000 --max-seconds 600
    python bench/soak.py --quick --server aio   # the same against puregrpc.aio
    python bench/soak.py --quick --python .venv-pypy/bin/python   # a server on PyPy
    python bench/soak.py --quick --tls          # over TLS (a test CA made with trustme)
    python bench/soak.py --quick --max-connection-age 2   # connections drained every ~2 s
    python bench/soak.py --quick --gzip         # messages compressed both ways

The server runs in a subprocess (this script with ``--serve``): ``puregrpc.server`` with
a 16-thread pool, or with ``--server aio`` ``puregrpc.aio.server`` with async handlers.
Either runs on uvloop where it is installed (as puregrpc's own I/O thread does), or on the
loop ``--loop`` names; the summary says which. It answers ``stats`` on stdin with one
JSON line (server.stats() counters, handlers running, threads, asyncio tasks, open file
descriptors, RSS after gc.collect() and malloc_trim(0)).
The clients are grpcio channels (``--channels``) shared by threads (``--threads``):

- unary ``Echo``: 87 % plain and 1 % of 1 MiB (the reply must equal the request), 4 %
  abort (INVALID_ARGUMENT), 4 % deadline (DEADLINE_EXCEEDED), 4 % cancelled by the
  client; the last two ask the handler to sleep 60 s, so a handler the server fails to
  stop (the sync one polls ``context.is_active()``; the async one must be cancelled)
  outlives the run and fails it;
- bidi ``Chat`` (one reply per request message, 100 per call) and server-streaming
  ``Feed`` (100 messages per call); one stream in 10 is cancelled half way;
- client-streaming ``Upload`` (``--upload-threads``): 20 messages of 64 KiB, answered
  with their count and size; one call in 10 is cancelled after 10 messages, while the
  server waits for the next;
- vanishing clients (``--reset-every``): a raw HTTP/2 connection of its own opens a
  ``Feed`` of large messages, reads 256 KiB of it and resets the TCP connection
  (SO_LINGER 0), as a killed pod or a load balancer does; its next connection must be
  answered again within 10 s.

Checks (exit status 1 if any fails, with the reason):

- every call ended as its kind says (no unexpected status, no wrong reply);
- the server refused no stream (``Server.stats().streams_refused``): with no stop and
  few streams per connection, a refusal can only come from a connection's drain
  (``--max-connection-age``) cutting a stream the client opened, which only the client's
  retry would save. With ``--max-connection-age`` the clients' retry buffer is 4 MiB
  (``grpc.per_rpc_retry_buffer_size``), above every request: a call that grpcio's
  client starts on a connection just after it read the GOAWAY is failed by the client
  before it is sent, and retried only if its request fits that buffer
  (``bench/goaway_race.py`` shows it, with grpcio's server as with puregrpc);
- after warm-up (the first ``--warm-up`` fraction of the work) the server's RSS grows by
  less than ``--rss-bound`` MiB, its thread count and file descriptors by nothing beyond
  the connections' sockets (at most ``--channels`` + 2);
- at the end, with the channels closed: no RPC in flight, no handler running, no
  connection, and threads, asyncio tasks and file descriptors back to what they were
  before any client.

It stops at the counts or at ``--max-seconds``, whichever comes first, and reports the
exact numbers done and the rates. ``--json FILE`` writes the samples and the summary.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Tuple

SERVICE = "soak.Soak"
MiB = 1024 * 1024
# The clients' grpc.per_rpc_retry_buffer_size with --max-connection-age: above the
# largest request (a 1 MiB echo, a 1.25 MiB upload).
RETRY_BUFFER = 4 * MiB


# --- the server (child process) -----------------------------------------------------


def _malloc_trim() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _sample(server: Any, handlers: int, trim: Any, tasks: int, loop: str) -> Dict[str, Any]:
    """One ``stats`` answer: the server's counters and the process's resources."""
    gc.collect()
    if trim is not None:
        trim(0)
    stats = server.stats()
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return {
        "rpcs_started": stats.rpcs_started,
        "rpcs_finished": stats.rpcs_finished,
        "rpcs_in_flight": stats.rpcs_in_flight,
        "connections": stats.connections,
        "connections_total": stats.connections_total,
        "bytes_received": stats.bytes_received,
        "bytes_sent": stats.bytes_sent,
        "streams_refused": stats.streams_refused,
        "handlers_running": handlers,
        "threads": threading.active_count(),
        "tasks": tasks,
        "fds": len(os.listdir("/proc/self/fd")),
        "rss": rss,
        "loop": loop,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def _add_port(server: Any, tls_dir: Optional[str]) -> int:
    """The server's port on 127.0.0.1: plain, or TLS with the key and certificate the
    driver wrote to ``tls_dir``."""
    if tls_dir is None:
        port: int = server.add_insecure_port("127.0.0.1:0")
        return port
    import puregrpc

    with open(os.path.join(tls_dir, "key.pem"), "rb") as f:
        key = f.read()
    with open(os.path.join(tls_dir, "cert.pem"), "rb") as f:
        cert = f.read()
    port = server.add_secure_port("127.0.0.1:0", puregrpc.ssl_server_credentials([(key, cert)]))
    return port


def _loop_kind(loop: Any) -> str:
    module = type(loop).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio" if module.startswith("asyncio") else module


class Config(NamedTuple):
    """How the server is set up: the driver passes it to the child on its command line."""

    kind: str  # sync | aio
    loop: str  # auto | asyncio | uvloop
    tls_dir: Optional[str]  # key.pem and cert.pem there: serve over TLS
    max_connection_age: Optional[float]  # seconds
    gzip: bool  # the server compresses its responses

    def argv(self) -> List[str]:
        out = ["--server", self.kind, "--loop", self.loop]
        out += ["--tls-dir", self.tls_dir] if self.tls_dir is not None else []
        out += ["--max-connection-age", str(self.max_connection_age)] if self.max_connection_age is not None else []
        return out + (["--gzip"] if self.gzip else [])

    def server_kwargs(self) -> Dict[str, Any]:
        """puregrpc.server / puregrpc.aio.server keyword arguments (no handlers)."""
        import puregrpc

        options: List[Tuple[str, int]] = []
        if self.max_connection_age is not None:
            # A connection past its age drains: GOAWAY, in-flight calls finish (10 s of grace).
            options += [
                ("grpc.max_connection_age_ms", int(self.max_connection_age * 1000)),
                ("grpc.max_connection_age_grace_ms", 10_000),
            ]
        return {"options": options, "compression": puregrpc.Compression.Gzip if self.gzip else None}


def serve(config: Config) -> None:
    import asyncio

    loop_name = config.loop
    if loop_name == "auto":
        loop_name = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    if config.kind == "aio":
        new_loop = asyncio.new_event_loop
        if loop_name == "uvloop":
            import uvloop

            new_loop = uvloop.new_event_loop
        loop = new_loop()
        try:
            loop.run_until_complete(serve_aio(config))
        finally:
            loop.close()
        return
    from concurrent.futures import ThreadPoolExecutor

    from puregrpc._loop import io_thread

    if _loop_kind(io_thread().loop) != loop_name:
        raise SystemExit(f"soak: puregrpc's I/O thread runs {_loop_kind(io_thread().loop)}, not {loop_name}")

    import puregrpc

    lock = threading.Lock()
    running = [0]

    def counted(fn: Any) -> Any:
        def wrapper(request: Any, context: Any) -> Any:
            with lock:
                running[0] += 1
            try:
                return fn(request, context)
            finally:
                with lock:
                    running[0] -= 1

        return wrapper

    def counted_stream(fn: Any) -> Any:
        def wrapper(request: Any, context: Any) -> Iterator[Any]:
            with lock:
                running[0] += 1
            try:
                yield from fn(request, context)
            finally:
                with lock:
                    running[0] -= 1

        return wrapper

    def echo(request: bytes, context: Any) -> bytes:
        if request.startswith(b"abort"):
            context.abort(puregrpc.StatusCode.INVALID_ARGUMENT, "asked to abort")
        if request.startswith(b"sleep"):
            end = time.monotonic() + float(request[5:].decode())
            while context.is_active() and time.monotonic() < end:
                time.sleep(0.005)
        return request

    def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        yield from requests

    def feed(request: bytes, context: Any) -> Iterator[bytes]:
        count, size = (int(x) for x in request.decode().split(":"))
        payload = b"f" * size
        for _ in range(count):
            yield payload

    def upload(requests: Iterator[bytes], context: Any) -> bytes:
        count = total = 0
        for request in requests:
            count += 1
            total += len(request)
        return b"%d:%d" % (count, total)

    trim = _malloc_trim()
    methods = {
        "Echo": puregrpc.unary_unary_rpc_method_handler(counted(echo)),
        "Chat": puregrpc.stream_stream_rpc_method_handler(counted_stream(chat)),
        "Feed": puregrpc.unary_stream_rpc_method_handler(counted_stream(feed)),
        "Upload": puregrpc.stream_unary_rpc_method_handler(counted(upload)),
    }
    workers = 16
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handler")
    server = puregrpc.server(
        pool, handlers=[puregrpc.method_handlers_generic_handler(SERVICE, methods)], **config.server_kwargs()
    )
    port = _add_port(server, config.tls_dir)
    server.start()
    for _ in range(workers):  # start every handler thread now
        pool.submit(time.sleep, 0.2)
    time.sleep(0.3)
    print(f"PORT {port}", flush=True)
    for line in sys.stdin:
        if line.strip() != "stats":
            break
        with lock:
            handlers = running[0]
        print(json.dumps(_sample(server, handlers, trim, 0, _loop_kind(io_thread().loop))), flush=True)
    server.stop(None).wait(10)
    pool.shutdown(wait=False)


async def serve_aio(config: Config) -> None:
    """The same service on ``puregrpc.aio``: every handler a coroutine or an async
    generator on the loop. A sleeping call is cancelled by the server at its deadline or
    the client's cancel (its task gets CancelledError), not polled."""
    import asyncio

    import puregrpc
    import puregrpc.aio

    running = [0]  # only the loop's thread touches it

    def counted(fn: Any) -> Any:
        async def wrapper(request: Any, context: Any) -> Any:
            running[0] += 1
            try:
                return await fn(request, context)
            finally:
                running[0] -= 1

        return wrapper

    def counted_stream(fn: Any) -> Any:
        async def wrapper(request: Any, context: Any) -> Any:
            running[0] += 1
            try:
                async for item in fn(request, context):
                    yield item
            finally:
                running[0] -= 1

        return wrapper

    async def echo(request: bytes, context: Any) -> bytes:
        if request.startswith(b"abort"):
            await context.abort(puregrpc.StatusCode.INVALID_ARGUMENT, "asked to abort")
        if request.startswith(b"sleep"):
            await asyncio.sleep(float(request[5:].decode()))
        return request

    async def chat(requests: Any, context: Any) -> Any:
        async for request in requests:
            yield request

    async def feed(request: bytes, context: Any) -> Any:
        count, size = (int(x) for x in request.decode().split(":"))
        payload = b"f" * size
        for _ in range(count):
            yield payload

    async def upload(requests: Any, context: Any) -> bytes:
        count = total = 0
        async for request in requests:
            count += 1
            total += len(request)
        return b"%d:%d" % (count, total)

    trim = _malloc_trim()
    methods = {
        "Echo": puregrpc.unary_unary_rpc_method_handler(counted(echo)),
        "Chat": puregrpc.stream_stream_rpc_method_handler(counted_stream(chat)),
        "Feed": puregrpc.unary_stream_rpc_method_handler(counted_stream(feed)),
        "Upload": puregrpc.stream_unary_rpc_method_handler(counted(upload)),
    }
    server = puregrpc.aio.server(
        handlers=[puregrpc.method_handlers_generic_handler(SERVICE, methods)], **config.server_kwargs()
    )
    port = _add_port(server, config.tls_dir)
    await server.start()
    loop = asyncio.get_running_loop()
    # stdin is read by a thread of its own, started before the first sample, so the
    # thread count the soak checks stays what it was.
    lines: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        # Up to the first line that is not "stats": the loop stops on it (and may be
        # closed by the time another line could be posted).
        line = "stats"
        while line.strip() == "stats":
            line = sys.stdin.readline()
            loop.call_soon_threadsafe(lines.put_nowait, line)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    print(f"PORT {port}", flush=True)
    while (await lines.get()).strip() == "stats":
        # This coroutine's task is the one task of the process that is not the server's.
        sample = _sample(server, running[0], trim, len(asyncio.all_tasks()) - 1, _loop_kind(loop))
        print(json.dumps(sample), flush=True)
    await server.stop(None)


# --- the driver (parent process) ------------------------------------------------------


class Server:
    def __init__(self, python: str, config: Config) -> None:
        self.proc = subprocess.Popen(
            [python, os.path.abspath(__file__), "--serve", *config.argv()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise SystemExit(f"soak: the server did not start ({line!r})")
        self.port = int(line.split()[1])
        self.lock = threading.Lock()

    def stats(self) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise SystemExit("soak: the server died")
        result: Dict[str, Any] = json.loads(line)
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


class Tally:
    """What the clients did, shared by their threads."""

    def __init__(self, unary: int, messages: int, deadline: float) -> None:
        self.lock = threading.Lock()
        self.unary_target = unary
        self.message_target = messages
        self.deadline = deadline
        self.unary = 0
        self.messages = 0  # streamed messages received by the clients
        self.sent_messages = 0  # streamed messages sent by the clients (Chat)
        self.kinds: Dict[str, int] = {}
        self.errors: List[str] = []

    def count(self, kind: str, unary: int = 0, messages: int = 0, sent: int = 0) -> None:
        with self.lock:
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            self.unary += unary
            self.messages += messages
            self.sent_messages += sent

    def error(self, text: str) -> None:
        with self.lock:
            if len(self.errors) < 50:
                self.errors.append(text)
            self.kinds["unexpected"] = self.kinds.get("unexpected", 0) + 1

    def unary_done(self) -> bool:
        return self.unary >= self.unary_target or time.monotonic() > self.deadline

    def streams_done(self) -> bool:
        return self.messages >= self.message_target or time.monotonic() > self.deadline

    def done(self) -> bool:
        return self.unary_done() and self.streams_done()


def unary_worker(channel: Any, tally: Tally, seed: int) -> None:
    import grpc

    echo = channel.unary_unary(f"/{SERVICE}/Echo")
    rng = random.Random(seed)
    n = 0
    while not tally.unary_done():
        n += 1
        roll = rng.random()
        called = time.monotonic()
        try:
            if roll < 0.04:
                try:
                    echo(b"abort", timeout=30)
                    tally.error("abort: the call succeeded")
                except grpc.RpcError as exc:
                    if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT:
                        tally.error(f"abort: {exc.code()} {exc.details()}")
                    else:
                        tally.count("abort", unary=1)
            elif roll < 0.08:
                try:
                    echo(b"sleep60", timeout=0.05)
                    tally.error("deadline: the call succeeded")
                except grpc.RpcError as exc:
                    if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                        tally.error(f"deadline: {exc.code()} {exc.details()}")
                    else:
                        tally.count("deadline", unary=1)
            elif roll < 0.12:
                future = echo.future(b"sleep60", timeout=30)
                time.sleep(0.005)
                future.cancel()
                try:
                    future.result()
                    tally.error("cancel: the call succeeded")
                except grpc.FutureCancelledError:
                    tally.count("cancel", unary=1)
                except grpc.RpcError as exc:
                    if exc.code() is not grpc.StatusCode.CANCELLED:
                        tally.error(f"cancel: {exc.code()} {exc.details()}")
                    else:
                        tally.count("cancel", unary=1)
            elif roll < 0.13:
                # 1 MiB each way, different every call (a stale or mixed-up buffer shows)
                message = (b"large-%d-%d-" % (seed, n)) * (MiB // 16)
                message = message[:MiB]
                reply = echo(message, timeout=30)
                if reply != message:
                    tally.error(f"large echo: wrong reply ({len(reply)} bytes) {reply[:40]!r}")
                else:
                    tally.count("large", unary=1)
            else:
                message = b"soak-%d-%d" % (seed, n)
                reply = echo(message, timeout=30)
                if reply != message:
                    tally.error(f"echo: wrong reply {reply[:40]!r}")
                else:
                    tally.count("ok", unary=1)
        except grpc.RpcError as exc:
            kind = "plain" if roll >= 0.13 else "large"
            tally.error(f"unary ({kind}, {time.monotonic() - called:.3f} s): {exc.code()} {exc.details()}")


def stream_worker(channel: Any, tally: Tally, seed: int, per_call: int) -> None:
    import grpc

    chat = channel.stream_stream(f"/{SERVICE}/Chat")
    feed = channel.unary_stream(f"/{SERVICE}/Feed")
    rng = random.Random(seed)
    while not tally.streams_done():
        cancel = rng.random() < 0.1
        use_chat = rng.random() < 0.5
        got = 0
        try:
            if use_chat:
                messages = [b"m%d" % i for i in range(per_call)]
                call = chat(iter(messages), timeout=60)
            else:
                call = feed(b"%d:64" % per_call, timeout=60)
            for reply in call:
                if use_chat and reply != messages[got]:
                    tally.error(f"chat: wrong reply {reply[:40]!r}")
                got += 1
                if cancel and got == per_call // 2:
                    call.cancel()
            if cancel:
                tally.error("stream: cancel did not end the call")
            elif got != per_call:
                tally.error(f"stream: {got} of {per_call} messages")
            else:
                tally.count("chat" if use_chat else "feed", messages=got, sent=per_call if use_chat else 0)
        except grpc.RpcError as exc:
            if cancel and exc.code() is grpc.StatusCode.CANCELLED:
                tally.count("stream-cancel", messages=got, sent=per_call if use_chat else 0)
            else:
                tally.error(f"stream: {exc.code()} {exc.details()} after {got}")


UPLOAD_CHUNKS = 20
UPLOAD_CHUNK = 64 * 1024


def upload_worker(channel: Any, tally: Tally, seed: int) -> None:
    """Client-streaming calls of 20 x 64 KiB (the server's receive window and credit at
    work); one in 10 is cancelled after 10 chunks, while the server waits for more."""
    import grpc

    upload = channel.stream_unary(f"/{SERVICE}/Upload")
    rng = random.Random(seed)
    chunk = b"u" * UPLOAD_CHUNK
    expected = b"%d:%d" % (UPLOAD_CHUNKS, UPLOAD_CHUNKS * UPLOAD_CHUNK)
    while not tally.streams_done():
        cancel = rng.random() < 0.1
        gate = threading.Event()

        def chunks(cancel: bool = cancel, gate: threading.Event = gate) -> Iterator[bytes]:
            for i in range(UPLOAD_CHUNKS):
                if cancel and i == UPLOAD_CHUNKS // 2:
                    gate.wait(10)  # the stream stays open until the client cancels it
                    return
                yield chunk

        future = upload.future(chunks(), timeout=60)
        if cancel:
            time.sleep(0.02)
            future.cancel()
            gate.set()
        try:
            reply = future.result()
            if cancel:
                tally.error("upload: cancel did not end the call")
            elif reply != expected:
                tally.error(f"upload: wrong reply {reply[:40]!r}")
            else:
                tally.count("upload")
        except grpc.FutureCancelledError:
            if cancel:
                tally.count("upload-cancel")
            else:
                tally.error("upload: cancelled unasked")
        except grpc.RpcError as exc:
            if cancel and exc.code() is grpc.StatusCode.CANCELLED:
                tally.count("upload-cancel")
            else:
                tally.error(f"upload: {exc.code()} {exc.details()}")


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


def reset_worker(port: int, tally: Tally, every: float, ca_file: Optional[str]) -> None:
    """Clients that vanish mid-stream (see the module's docstring); over TLS (ALPN h2,
    the server verified against ``ca_file``) where one is given."""
    import hpack

    tls: Optional[ssl.SSLContext] = None
    if ca_file is not None:
        tls = ssl.create_default_context(cafile=ca_file)
        tls.set_alpn_protocols(["h2"])

    window = (16 * MiB).to_bytes(4, "big")
    headers = [
        (":method", "POST"),
        (":scheme", "http" if tls is None else "https"),
        (":path", f"/{SERVICE}/Feed"),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    request = b"1000:65536"
    opening = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + _frame(0x4, 0, 0, (4).to_bytes(2, "big") + window)  # SETTINGS_INITIAL_WINDOW_SIZE
        + _frame(0x8, 0, 0, window)  # the connection's window
        + _frame(0x1, 0x4, 1, hpack.Encoder().encode(headers))
        + _frame(0x0, 0x1, 1, b"\x00" + len(request).to_bytes(4, "big") + request)
    )
    while not tally.streams_done():
        try:
            plain = socket.create_connection(("127.0.0.1", port), timeout=10)
            # wrap_socket takes the descriptor over; SSLSocket.close() sends no close_notify.
            with plain if tls is None else tls.wrap_socket(plain, server_hostname="127.0.0.1") as sock:
                sock.sendall(opening)
                received = 0
                while received < 256 * 1024:
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        raise ConnectionError(f"closed by the server after {received} bytes")
                    received += len(chunk)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError as exc:  # a timeout too: the server never answered this connection
            tally.error(f"vanishing client: {exc!r}")
        else:
            tally.count("reset")
        time.sleep(every)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--server", choices=("sync", "aio"), default="sync", help="puregrpc.server (sync) or puregrpc.aio.server"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the server's event loop (auto: uvloop where installed); for the sync server, puregrpc's own choice, "
        "which the soak checks",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter that runs the server, e.g. PyPy's (default: this one, which runs the grpcio clients)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="serve over TLS (a test CA's certificate, made with trustme)"
    )
    parser.add_argument("--tls-dir", default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--gzip", action="store_true", help="gzip both ways: the clients' channels and the server's responses"
    )
    parser.add_argument(
        "--max-connection-age",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the server closes each connection gracefully after this long (grpc.max_connection_age_ms, gRFC A9): "
        "the clients must not notice",
    )
    parser.add_argument("--quick", action="store_true", help="~15 s: 10,000 unary, 40,000 messages, at most 15 s")
    parser.add_argument("--unary", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--max-seconds", type=float, default=None, help="stop then, whatever is done")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8, help="unary threads (as many more for streams / 2)")
    parser.add_argument("--per-call", type=int, default=100, help="streamed messages per streaming call")
    parser.add_argument("--upload-threads", type=int, default=2, help="client-streaming threads (0: none)")
    parser.add_argument(
        "--reset-every",
        type=float,
        default=0.05,
        help="pause between one vanishing client and the next, in seconds (0: none)",
    )
    parser.add_argument("--warm-up", type=float, default=0.1, help="fraction of the run before growth is measured")
    parser.add_argument("--rss-bound", type=float, default=24.0, help="MiB of RSS growth allowed after warm-up")
    parser.add_argument("--interval", type=float, default=None, help="seconds between samples")
    parser.add_argument("--json", default=None, help="write the samples and the summary there")
    args = parser.parse_args(argv)
    if args.serve:
        serve(Config(args.server, args.loop, args.tls_dir, args.max_connection_age, args.gzip))
        return 0
    if args.quick:
        args.unary, args.messages = 10_000, 40_000
        args.max_seconds = args.max_seconds or 15.0
        args.interval = args.interval or 1.0
    interval = args.interval or 5.0

    import grpc

    tls_dir: Optional[str] = None
    credentials: Any = None
    if args.tls:
        import tempfile

        import trustme

        tls_dir = tempfile.mkdtemp(prefix="soak-tls-")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(os.path.join(tls_dir, "key.pem"))
        cert.cert_chain_pems[0].write_to_path(os.path.join(tls_dir, "cert.pem"))
        ca.cert_pem.write_to_path(os.path.join(tls_dir, "ca.pem"))
        credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
    server = Server(args.python, Config(args.server, args.loop, tls_dir, args.max_connection_age, args.gzip))
    failures: List[str] = []
    samples: List[Dict[str, Any]] = []
    try:
        before = server.stats()
        started = time.monotonic()
        deadline = started + (args.max_seconds if args.max_seconds else 10**9)
        tally = Tally(args.unary, args.messages, deadline)
        # Each channel its own connection (grpcio shares one between like channels otherwise).
        options: List[Tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
        if args.max_connection_age is not None:
            # A channel can start a call on a connection that has just read a drain's
            # GOAWAY; grpc-core then fails it before sending it, and retries it elsewhere
            # only while its request fits the retry buffer (256 KiB by default): a 1 MiB
            # call or an upload fails UNAVAILABLE "GOAWAY received" at any server,
            # grpcio's own included (bench/goaway_race.py). Deployments that drain set
            # this buffer above their largest request; so does the soak.
            options.append(("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER))
        target = f"127.0.0.1:{server.port}"
        compression = grpc.Compression.Gzip if args.gzip else None
        channels = [
            grpc.insecure_channel(target, options=options, compression=compression)
            if credentials is None
            else grpc.secure_channel(target, credentials, options=options, compression=compression)
            for _ in range(args.channels)
        ]
        threads = [
            threading.Thread(target=unary_worker, args=(channels[i % len(channels)], tally, i), daemon=True)
            for i in range(args.threads)
        ]
        threads += [
            threading.Thread(
                target=stream_worker,
                args=(channels[i % len(channels)], tally, 1000 + i, args.per_call),
                daemon=True,
            )
            for i in range(max(1, args.threads // 2))
        ]
        threads += [
            threading.Thread(target=upload_worker, args=(channels[i % len(channels)], tally, 2000 + i), daemon=True)
            for i in range(args.upload_threads)
        ]
        if args.reset_every > 0:
            threads.append(
                threading.Thread(
                    target=reset_worker,
                    args=(server.port, tally, args.reset_every, tls_dir and os.path.join(tls_dir, "ca.pem")),
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        print(
            f"soak: {args.unary} unary, {args.messages} streamed messages, {args.channels} channels, "
            f"{len(threads)} client threads, max {args.max_seconds or 'unlimited'} s; "
            f"{args.server} server{' (TLS)' if args.tls else ''} on {before['python']} and {before['loop']}, "
            f"pid {server.proc.pid}",
            flush=True,
        )
        baseline: Optional[Dict[str, Any]] = None
        while any(t.is_alive() for t in threads):
            time.sleep(interval if not tally.done() else 0.1)
            sample = server.stats()
            sample["t"] = round(time.monotonic() - started, 1)
            sample["unary"], sample["messages"] = tally.unary, tally.messages
            samples.append(sample)
            # Warm-up ends when both counts, or the time, have reached their fraction.
            fraction = max(
                min(tally.unary / max(1, args.unary), tally.messages / max(1, args.messages)),
                (time.monotonic() - started) / (args.max_seconds or 1e18),
            )
            if baseline is None and fraction >= args.warm_up:
                baseline = sample
            print(
                f"t={sample['t']:7.1f}s unary {tally.unary:8d} messages {tally.messages:8d} "
                f"rss {sample['rss'] / MiB:6.1f} MiB threads {sample['threads']:3d} fds {sample['fds']:4d} "
                f"in-flight {sample['rpcs_in_flight']:3d} handlers {sample['handlers_running']:3d}"
                + (f" tasks {sample['tasks']:3d}" if args.server == "aio" else "")
                + (" (warm-up over)" if baseline is sample else ""),
                flush=True,
            )
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        for channel in channels:
            channel.close()
        # Everything must return to zero once the channels are closed.
        end = time.monotonic() + 30
        final = server.stats()
        while time.monotonic() < end and (
            final["rpcs_in_flight"]
            or final["handlers_running"]
            or final["connections"]
            or final["fds"] > before["fds"]
            or final["tasks"] > before["tasks"]
        ):
            time.sleep(0.2)
            final = server.stats()

        after_warm = [s for s in samples if baseline is not None and s["t"] >= baseline["t"]]
        if baseline is None or not after_warm:
            baseline = samples[0] if samples else final
            after_warm = samples or [final]
        rss_growth = max(s["rss"] for s in after_warm) - baseline["rss"]
        thread_growth = max(s["threads"] for s in after_warm) - baseline["threads"]
        fd_growth = max(s["fds"] for s in after_warm) - baseline["fds"]
        summary = {
            "unary": tally.unary,
            "streamed_messages_received": tally.messages,
            "streamed_messages_sent": tally.sent_messages,
            "seconds": round(elapsed, 1),
            "unary_per_second": round(tally.unary / elapsed, 1),
            "messages_per_second": round(tally.messages / elapsed, 1),
            "outcomes": tally.kinds,
            "rss_start_mib": round(before["rss"] / MiB, 1),
            "rss_after_warm_up_mib": round(baseline["rss"] / MiB, 1),
            "rss_max_mib": round(max(s["rss"] for s in after_warm) / MiB, 1),
            "rss_growth_after_warm_up_mib": round(rss_growth / MiB, 2),
            "rss_end_mib": round(final["rss"] / MiB, 1),
            "thread_growth_after_warm_up": thread_growth,
            "fd_growth_after_warm_up": fd_growth,
            "server_rpcs_started": final["rpcs_started"] - before["rpcs_started"],
            "server_connections_accepted": final["connections_total"] - before["connections_total"],
            "server_mib_received": round((final["bytes_received"] - before["bytes_received"]) / MiB, 1),
            "server_mib_sent": round((final["bytes_sent"] - before["bytes_sent"]) / MiB, 1),
            "server_streams_refused": final["streams_refused"] - before["streams_refused"],
            "server_rpcs_finished": final["rpcs_finished"],
            "server": args.server,
            "tls": args.tls,
            "max_connection_age": args.max_connection_age,
            "gzip": args.gzip,
            "python": final["python"],
            "loop": final["loop"],
            "end": {
                k: final[k] for k in ("rpcs_in_flight", "handlers_running", "connections", "threads", "tasks", "fds")
            },
            "before": {k: before[k] for k in ("threads", "tasks", "fds")},
        }
        if tally.errors:
            failures.append(f"{tally.kinds.get('unexpected', 0)} calls ended unexpectedly, e.g. {tally.errors[:5]}")
        if rss_growth > args.rss_bound * MiB:
            failures.append(f"RSS grew {rss_growth / MiB:.1f} MiB after warm-up (bound {args.rss_bound} MiB)")
        if thread_growth > 0:
            failures.append(f"threads grew by {thread_growth} after warm-up")
        if fd_growth > args.channels + 2:
            failures.append(f"file descriptors grew by {fd_growth} after warm-up")
        for key in ("rpcs_in_flight", "handlers_running", "connections"):
            if final[key]:
                failures.append(f"{key} is {final[key]} at the end, not 0")
        if final["threads"] > before["threads"] or final["fds"] > before["fds"] or final["tasks"] > before["tasks"]:
            failures.append(
                f"threads {before['threads']}->{final['threads']}, tasks {before['tasks']}->{final['tasks']}, "
                f"fds {before['fds']}->{final['fds']} at the end"
            )
        if not tally.unary or not tally.messages:
            failures.append("no calls were made")
        if summary["server_streams_refused"]:
            # Nothing here stops the server, and the clients stay far below the stream
            # limit: a refusal means a drain cut a stream the client had opened, and left
            # the call to the client's retry (grpcio's usually retries; not always).
            failures.append(f"the server refused {summary['server_streams_refused']} streams (REFUSED_STREAM)")
        summary["failures"] = failures
        print("soak summary: " + json.dumps(summary, indent=1), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"summary": summary, "samples": samples}, f, indent=1)
    finally:
        server.close()
        if tls_dir is not None:
            shutil.rmtree(tls_dir, ignore_errors=True)
    if failures:
        print("SOAK FAILED: " + "; ".join(failures), flush=True)
        return 1
    print("SOAK PASSED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
