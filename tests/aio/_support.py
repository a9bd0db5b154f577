"""Run an asyncio gRPC server (grpc.aio or puregrpc.aio) on a loop in a background thread.

The tests are plain synchronous pytest functions (no pytest-asyncio): the server lives on
an event loop owned by a helper thread, coroutines are handed to that loop with
``Served.run``, and grpcio's blocking client calls from the test's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import grpc

from puregrpc._loop import _new_event_loop

# Every blocking wait in this suite carries a timeout so that a bug never hangs it.
TIMEOUT = 10.0
SERVICE = "aio.Test"

T = TypeVar("T")

FLAVOURS = ("grpcaio", "puregrpc")


def aio_module(flavour: str) -> Any:
    """``grpc.aio`` or ``puregrpc.aio``: the module whose ``server()`` a test runs."""
    if flavour == "grpcaio":
        return grpc.aio
    return importlib.import_module("puregrpc.aio")


def puregrpc_aio_missing() -> Optional[str]:
    """Why ``puregrpc.aio`` cannot be imported, or None if it can."""
    try:
        importlib.import_module("puregrpc.aio")
    except Exception as exc:  # ImportError, or a half-built module failing at import
        return f"{type(exc).__name__}: {exc}"
    return None


class LoopThread:
    """An event loop running forever in a daemon thread: uvloop's where it is installed
    (the uvloop run of scripts/test), else asyncio's."""

    def __init__(self) -> None:
        self.loop = _new_event_loop()
        self._thread = threading.Thread(target=self._main, name="aio-loop", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Awaitable[T], timeout: float = TIMEOUT) -> T:
        """Run ``coro`` on the loop and wait for its result from this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def spawn(self, coro: Awaitable[T]) -> Any:
        """Start ``coro`` on the loop; returns a concurrent future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], T], timeout: float = TIMEOUT) -> T:
        """Run the plain callable ``fn`` on the loop thread."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                self.run(cancel_all(), 5.0)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self.loop.close()


class Served:
    """A started server, its loop and its address."""

    def __init__(self, flavour: str, aio: Any, loop: LoopThread, server: Any, port: int, pool: Any) -> None:
        self.flavour = flavour
        self.aio = aio
        self.loop = loop
        self.server = server
        self.port = port
        self.pool = pool
        self.target = f"127.0.0.1:{port}"

    def run(self, coro: Awaitable[T], timeout: float = TIMEOUT) -> T:
        return self.loop.run(coro, timeout)

    def spawn(self, coro: Awaitable[T]) -> Any:
        return self.loop.spawn(coro)

    def stop(self, grace: Optional[float], timeout: float = TIMEOUT) -> None:
        self.run(self.server.stop(grace), timeout)

    def channel(self, **kwargs: Any) -> grpc.Channel:
        return grpc.insecure_channel(self.target, **kwargs)

    @contextlib.contextmanager
    def open_channel(self, **kwargs: Any) -> Iterator[grpc.Channel]:
        ch = self.channel(**kwargs)
        try:
            yield ch
        finally:
            ch.close()


def make_server(aio: Any, setup: Optional[Callable[[Any], None]], kwargs: Dict[str, Any]) -> Tuple[Any, int]:
    """Build a server (on the calling, running loop), apply ``setup``, bind a port."""
    server = aio.server(**kwargs)
    if setup is not None:
        setup(server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    return server, port


@contextlib.contextmanager
def serve(
    flavour: str,
    *handlers: Any,
    setup: Optional[Callable[[Any], None]] = None,
    start: bool = True,
    pool_workers: int = 8,
    **server_kwargs: Any,
) -> Iterator[Served]:
    """A server of ``flavour`` running on a fresh background loop.

    ``handlers`` are generic handlers added with ``add_generic_rpc_handlers``; ``setup(server)``
    runs before ``start()``. The server is stopped with ``stop(None)`` and the loop closed at exit.
    """
    aio = aio_module(flavour)
    loop = LoopThread()
    pool = ThreadPoolExecutor(max_workers=pool_workers, thread_name_prefix="migration")
    server_kwargs.setdefault("migration_thread_pool", pool)

    def full_setup(server: Any) -> None:
        if handlers:
            server.add_generic_rpc_handlers(tuple(handlers))
        if setup is not None:
            setup(server)

    async def create() -> Tuple[Any, int]:
        server, port = make_server(aio, full_setup, server_kwargs)
        if start:
            await server.start()
        return server, port

    try:
        server, port = loop.run(create())
        served = Served(flavour, aio, loop, server, port, pool)
        try:
            yield served
        finally:
            with contextlib.suppress(Exception):
                loop.run(server.stop(None), 5.0)
    finally:
        loop.close()
        pool.shutdown(wait=False)


def generic(handlers: Dict[str, Any], service: str = SERVICE) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(service, handlers)


def method(name: str, service: str = SERVICE) -> str:
    return f"/{service}/{name}"


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Events:
    """A thread-safe log of what handlers and callbacks saw."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.items: List[Any] = []

    def add(self, item: Any) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, item: Any, timeout: float = TIMEOUT) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: item in self.items, timeout)

    def count(self, item: Any) -> int:
        with self._cond:
            return self.items.count(item)

    def __contains__(self, item: Any) -> bool:
        with self._cond:
            return item in self.items

    def __repr__(self) -> str:
        return f"Events({self.items!r})"


def error_of(fn: Callable[[], Any]) -> grpc.RpcError:
    """The RpcError that ``fn()`` raises (fails the test if it returns)."""
    try:
        result = fn()
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"expected an RpcError, got {result!r}")


# --- the h2 library as a raw client, to see messages exactly as they are on the wire ---


class RawResponse:
    def __init__(self) -> None:
        self.headers: List[Tuple[str, str]] = []
        self.trailers: List[Tuple[str, str]] = []
        self.data = b""
        self.ended = False
        self.reset: Optional[int] = None

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers + self.trailers:
            if key == name:
                return value
        return None

    def messages(self) -> List[Tuple[int, bytes]]:
        """The body as (compressed flag, payload) messages."""
        out: List[Tuple[int, bytes]] = []
        pos = 0
        while pos < len(self.data):
            length = int.from_bytes(self.data[pos + 1 : pos + 5], "big")
            out.append((self.data[pos], self.data[pos + 5 : pos + 5 + length]))
            pos += 5 + length
        assert pos == len(self.data), "truncated gRPC message"
        return out


def grpc_message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def raw_unary(port: int, path: str, payload: bytes, extra: Sequence[Tuple[str, str]] = ()) -> RawResponse:
    """One unary request over a fresh HTTP/2 connection driven by the ``h2`` library."""
    import h2.config
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *extra,
        ]
        conn.send_headers(sid, headers)
        conn.send_data(sid, grpc_message(payload), end_stream=True)
        sock.sendall(conn.data_to_send())
        response = RawResponse()
        end = time.monotonic() + TIMEOUT
        while not response.ended and response.reset is None:
            assert time.monotonic() < end, "no complete response"
            data = sock.recv(65536)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if getattr(event, "stream_id", None) != sid:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    response.headers = list(event.headers)
                elif isinstance(event, h2.events.TrailersReceived):
                    response.trailers = list(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    response.data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.StreamEnded):
                    response.ended = True
                elif isinstance(event, h2.events.StreamReset):
                    response.reset = event.error_code
            sock.sendall(conn.data_to_send())
        return response
    finally:
        sock.close()


class LoopEvent:
    """An ``asyncio.Event`` made on first use, on the loop that uses it.

    Python 3.9's ``asyncio.Event()`` binds to the current thread's loop when it is made, so an
    event made in the test's thread could not be awaited on the server's loop.
    """

    def __init__(self) -> None:
        self._event: Optional[asyncio.Event] = None

    def _get(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
        return self._event

    async def wait(self) -> bool:
        return await self._get().wait()

    def set(self) -> None:
        """Set it; call on the loop's thread (``loop.call_soon_threadsafe(event.set)``)."""
        self._get().set()
