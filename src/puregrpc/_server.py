"""The server: the public ``Server`` and the ``ServerCore`` the I/O thread drives.

``Server`` is what user code holds; ``ServerCore`` is everything the I/O thread
needs. The core never refers back to the ``Server``, so dropping the last user
reference lets the ``Server`` be collected, and its ``__del__`` starts a
graceful shutdown (lifecycle.md 19) without any polling thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures  # noqa: F401  (imported first: see _register_exit_hook)
import logging
import math
import os
import socket
import ssl
import sys
import threading
import time
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from ._addresses import bind
from ._call import CallCore
from ._callbacks import run_callbacks
from ._compression import to_encoding
from ._connection import Connection
from ._credentials import to_ssl_context
from ._h2.connection import H2Config
from ._handlers import Registry
from ._lifecycle import Input, Lifecycle, State, StopDecision
from ._loop import IOThread, LoopIO, io_thread
from ._options import parse_options
from ._pool import PoolDispatcher
from ._protocol import RequestHead
from ._stats import Counters, RpcObserver, ServerStats
from ._status import StatusCode
from ._sync_call import SyncDriver

_LOGGER = logging.getLogger("puregrpc")
_TLS_HANDSHAKE_TIMEOUT = 10.0


class ServerCore:
    """Shared state of one server; its ``*_loop`` methods run on the I/O thread."""

    # Slots: more attributes than the 30 keys CPython shares between instances (see CallCore).
    __slots__ = (
        "_adopting",
        "_drain_listeners",
        "_drain_lock",
        "_drain_notified",
        "_grace_timer",
        "_listeners_closed",
        "active_rpcs",
        "connections",
        "counters",
        "default_encoding",
        "draining",
        "h2_config",
        "handshaking",
        "interceptors",
        "io",
        "lifecycle",
        "listeners",
        "max_concurrent_rpcs",
        "max_receive",
        "max_send",
        "observers",
        "observers_lock",
        "opening",
        "options",
        "pool",
        "pool_dispatcher",
        "registry",
        "reuse_port",
        "shared_sockets",
        "sockets",
        "sockets_closed",
        "ssl_contexts",
        "stats",
    )

    def __init__(
        self,
        thread_pool: Any,
        interceptors: Sequence[Any],
        options: Sequence[Tuple[str, Any]],
        maximum_concurrent_rpcs: Optional[int],
        compression: Any,
        io: Optional[LoopIO] = None,
    ) -> None:
        if thread_pool is None or not callable(getattr(thread_pool, "submit", None)):
            raise TypeError(f"thread_pool must be an executor with submit(), got {thread_pool!r}")
        if maximum_concurrent_rpcs is not None and maximum_concurrent_rpcs < 1:
            raise ValueError("maximum_concurrent_rpcs must be None or a positive int")
        opts = parse_options(options)
        self.options = opts
        self.io: LoopIO = io if io is not None else io_thread()
        self.pool = thread_pool
        self.pool_dispatcher = PoolDispatcher(thread_pool)
        self.lifecycle = Lifecycle()
        self.registry = Registry()
        self.interceptors = tuple(interceptors)
        for interceptor in self.interceptors:
            if not callable(getattr(interceptor, "intercept_service", None)):
                raise TypeError(f"interceptor has no intercept_service(): {interceptor!r}")
        self.max_receive = opts.max_receive
        self.max_send = opts.max_send
        self.reuse_port = opts.reuse_port
        config = H2Config()
        config.max_concurrent_streams = opts.max_concurrent_streams
        config.max_header_list_size = opts.max_metadata_size
        config.initial_window_size = opts.stream_window
        config.min_ping_interval = opts.min_ping_interval
        config.max_ping_strikes = opts.max_ping_strikes
        config.permit_pings_without_calls = opts.keepalive_permit_without_calls
        self.h2_config = config
        self.default_encoding = to_encoding(compression)
        self.max_concurrent_rpcs = maximum_concurrent_rpcs
        # I/O thread state
        self.active_rpcs = 0
        self.handshaking = 0  # connections that have not sent their preface and SETTINGS yet
        self.connections: Set[Connection] = set()
        # Connections accepted whose connection_made has not run yet (a loop turn, or a
        # TLS handshake, later): sockets_closed waits for them too, or a process exiting
        # just after termination would reset them. Weak: a failed handshake drops one.
        self.opening: weakref.WeakSet[Connection] = weakref.WeakSet()
        self.sockets: List[socket.socket] = []
        # Listening sockets another process holds too (a supervisor's, see add_shared_sockets).
        self.shared_sockets: Set[socket.socket] = set()
        self.ssl_contexts: Dict[socket.socket, ssl.SSLContext] = {}  # TLS sockets
        self.listeners: List[asyncio.AbstractServer] = []
        self._adopting: Set[asyncio.Task[None]] = set()  # see _adopt_queued_connections
        self.draining = False
        self._listeners_closed = False
        self._grace_timer: Optional[asyncio.TimerHandle] = None
        self.stats = {"finished": 0, "cancelled": 0}
        self.counters = Counters()
        self.observers: Tuple[RpcObserver, ...] = ()  # replaced whole, never mutated
        self.observers_lock = threading.Lock()
        # Set once the server has terminated and every connection is closed (after the
        # final GOAWAY, the peer's FIN or a linger timeout): a process about to exit
        # waits for it briefly, so that no socket is torn down under unsent responses.
        self.sockets_closed = threading.Event()
        # Called once when a drain begins (e.g. health: every service NOT_SERVING).
        self._drain_listeners: List[Callable[[], None]] = []
        self._drain_lock = threading.Lock()
        self._drain_notified = False

    # -- called by Server (any thread) ------------------------------------------
    def add_port(self, address: str, ssl_context: Optional[ssl.SSLContext] = None) -> int:
        if self.lifecycle.state is not State.NEW:
            self.lifecycle.apply(Input.ADD_PORT)  # raises the table's error
        socks, port = bind(address, self.reuse_port)
        self.sockets.extend(socks)
        if ssl_context is not None:
            for sock in socks:
                self.ssl_contexts[sock] = ssl_context
        return port

    def add_shared_sockets(self, socks: List[socket.socket], ssl_context: Optional[ssl.SSLContext] = None) -> int:
        """Serve on listening sockets another process made and keeps (``--workers``: the
        supervisor's, one per slot, passed to each worker of that slot); their port.
        Their accept queue outlives this server, so its drain leaves the queue to the
        next process serving the socket rather than taking it."""
        if self.lifecycle.state is not State.NEW:
            self.lifecycle.apply(Input.ADD_PORT)  # raises the table's error
        for sock in socks:
            sock.setblocking(False)
            self.sockets.append(sock)
            self.shared_sockets.add(sock)
            if ssl_context is not None:
                self.ssl_contexts[sock] = ssl_context
        return int(socks[0].getsockname()[1])  # TCP only: --workers refuses unix: addresses

    def start(self) -> None:
        self.lifecycle.apply(Input.START)
        if isinstance(self.io, IOThread) and not self.io.thread.is_alive():
            self.io = io_thread()  # made before os.fork(), started after it: this process's thread
        _live_cores.add(self)
        future = asyncio.run_coroutine_threadsafe(self._start_listeners(), self.io.loop)
        future.result()

    async def _start_listeners(self) -> None:
        loop = self.io.loop
        for sock in self.sockets:
            context = self.ssl_contexts.get(sock)
            listener = await loop.create_server(
                self._new_connection,
                sock=sock,
                backlog=1024,
                ssl=context,
                ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT if context is not None else None,
            )
            self.listeners.append(listener)

    def add_drain_listener(self, listener: Callable[[], None]) -> None:
        with self._drain_lock:
            if not self._drain_notified:
                self._drain_listeners.append(listener)
                return
        run_callbacks([listener])  # the drain has already begun

    def notify_drain(self) -> None:
        """A drain begins: run the drain listeners once, on the callback thread
        (never on the I/O thread, never blocking the caller)."""
        with self._drain_lock:
            if self._drain_notified:
                return
            self._drain_notified = True
            listeners, self._drain_listeners = self._drain_listeners, []
        if listeners:
            run_callbacks(listeners)

    def stop(self, grace: Optional[float]) -> threading.Event:
        done, decision = self.lifecycle.stop(grace, time.monotonic())
        if decision is StopDecision.BEGIN:
            self.notify_drain()
            self.io.call(self._begin_drain_loop)
            if not self.io.in_loop_thread():
                self.io.call(lambda: None)  # and its _close_listeners_loop: refused before stop() returns
        elif decision is StopDecision.EARLIER:
            self.io.call(self._arm_deadline_loop)
        if grace is None and not self.io.in_loop_thread():
            done.wait()
        return done

    def close_unstarted(self) -> None:
        if self.lifecycle.state is State.NEW:
            for sock in self.sockets:
                sock.close()
            self.sockets.clear()

    # -- I/O thread ---------------------------------------------------------------
    def find_handler_on_loop(self, method: str) -> Tuple[bool, Optional[Any]]:
        """(True, handler or None) where finding it needs no user code; (False, None)
        where it does (interceptors: the lookup runs with the handler)."""
        if self.interceptors:
            return False, None
        return self.registry.lookup_static(method)

    def new_call(self, conn: Connection, stream_id: int, head: RequestHead, request_ended: bool) -> CallCore:
        return CallCore(conn, stream_id, head, request_ended)

    def dispatch(self, call: CallCore) -> None:
        """Run the call's handler on the thread pool."""
        self.submit_sync(call)

    def submit_sync(self, call: CallCore) -> None:
        driver = SyncDriver(call, self.registry, self.interceptors)
        try:
            self.pool_dispatcher.submit(driver.run)
        except RuntimeError as exc:  # the user's pool was shut down
            call.link.worker_started()
            call.abort_loop(StatusCode.UNAVAILABLE, f"server thread pool unavailable: {exc}")

    def _new_connection(self) -> Connection:
        conn = Connection(self)
        self.opening.add(conn)
        return conn

    def connection_opened(self, conn: Connection) -> None:
        self.opening.discard(conn)
        self.connections.add(conn)
        self.counters.connections += 1
        self.counters.connections_total += 1

    def connection_closed(self, conn: Connection) -> None:
        self.opening.discard(conn)  # closed in connection_made (TLS without h2, too many handshakes)
        if conn in self.connections:
            self.connections.discard(conn)
            self.counters.connections -= 1
        self._check_sockets_closed()

    def call_finished(self, completed: bool, code: StatusCode) -> None:
        self.active_rpcs -= 1
        self.counters.finished[code._value_[0]] += 1
        self.stats["finished" if completed else "cancelled"] += 1
        if self.draining and self.active_rpcs == 0:
            self._terminate_loop()

    def _check_sockets_closed(self) -> None:
        if (
            self.lifecycle.terminated
            and self._listeners_closed
            and not self._adopting  # taken from an accept queue, not yet a Connection
            and not self.opening
            and not self.connections
        ):
            self.sockets_closed.set()

    def _begin_drain_loop(self) -> None:
        self.draining = True
        # Accept nothing more now, close the listeners one loop turn later. asyncio makes
        # the transport of a connection it has accepted in a task of its own, which on a
        # closed Server fails (an assertion in Server._attach, swallowed) and leaves the
        # socket to the garbage collector: in a rolling restart such a client hung until
        # the worker exited. The tasks already created run their first step before the
        # close; removing the reader first means no new one is created after it.
        for sock in self.sockets:
            try:
                self.io.loop.remove_reader(sock)
            except (NotImplementedError, ValueError, OSError):
                pass  # a loop without readers (its servers accept as they make transports)
        self.io.loop.call_soon(self._close_listeners_loop)
        for conn in list(self.connections):
            conn.begin_shutdown()
        self.io.flush_dirty()
        if self.active_rpcs == 0:
            self._terminate_loop()
        else:
            self._arm_deadline_loop()

    def _close_listeners_loop(self) -> None:
        self._adopt_queued_connections()
        for listener in self.listeners:
            listener.close()
        for sock in self.sockets:
            sock.close()  # refuse new TCP connections (ServerCore.stop waits for this)
        self._listeners_closed = True
        self._check_sockets_closed()

    def _adopt_queued_connections(self) -> None:
        """Take the connections still waiting in the listeners' accept queues before the
        listeners close. Linux resets those (an SO_REUSEPORT group passes them to its
        other listeners only with ``net.ipv4.tcp_migrate_req``): when servers in several
        processes share a port (``grpc.so_reuseport``) and are restarted one by one, a
        client reconnecting after one's GOAWAY could land in the queue of another just as
        it closed, and fail UNAVAILABLE. Taken, they get the drain's GOAWAY like every
        other connection, and reconnect elsewhere. (``--workers`` needs none of this: the
        supervisor keeps each socket open across restarts, see add_shared_sockets.)"""
        loop = self.io.loop
        for sock in self.sockets:
            if sock in self.shared_sockets:
                continue  # the queue is the next process's to serve (add_shared_sockets)
            context = self.ssl_contexts.get(sock)
            try:
                sock.setblocking(False)
            except OSError:
                continue
            while True:
                try:
                    conn_sock, _ = sock.accept()
                except OSError:  # BlockingIOError: the queue is empty
                    break
                conn_sock.setblocking(False)
                task = loop.create_task(self._serve_adopted(conn_sock, context))
                self._adopting.add(task)  # the loop holds tasks weakly
                task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[None]) -> None:
        self._adopting.discard(task)
        self._check_sockets_closed()  # a failed adoption leaves no connection to wait for

    async def _serve_adopted(self, sock: socket.socket, context: Optional[ssl.SSLContext]) -> None:
        try:
            await self.io.loop.connect_accepted_socket(
                self._new_connection,
                sock,
                ssl=context,
                ssl_handshake_timeout=_TLS_HANDSHAKE_TIMEOUT if context is not None else None,
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            _LOGGER.info("connection taken from the accept queue at drain failed: %s", exc)
            sock.close()

    def _arm_deadline_loop(self) -> None:
        if self.lifecycle.terminated:
            return
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        deadline = self.lifecycle.deadline
        if deadline is None or deadline == math.inf:
            return
        delay = deadline - time.monotonic()
        if delay <= 0:
            self._grace_expired_loop()
        else:
            self._grace_timer = self.io.loop.call_later(delay, self._grace_expired_loop)

    def _grace_expired_loop(self) -> None:
        self._grace_timer = None
        for conn in list(self.connections):
            conn.abort_all(StatusCode.UNAVAILABLE, "the server is shutting down")
        self.io.flush_dirty()

    def _terminate_loop(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        for conn in list(self.connections):
            conn.begin_shutdown()
            conn.finish_shutdown()
        self.io.flush_dirty()
        _live_cores.discard(self)
        self.lifecycle.apply(Input.DRAINED)
        self._check_sockets_closed()


_live_cores: Set[ServerCore] = set()


def _forget_servers_in_child() -> None:
    # The servers a forked child inherits serve in the parent: stopping them at the
    # child's exit would wait on an I/O thread the child does not have.
    _live_cores.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_servers_in_child)


class ServerBase:
    """What both flavours of server share: handlers, ports, and puregrpc's extensions."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[Any]) -> None:
        """Add generic handlers; allowed before and after ``start()``."""
        self._core.registry.add_generic(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Dict[str, Any]) -> None:
        """Register handlers by method name; they win over generic handlers.
        Ignored, with a warning, once the server has started (as grpcio)."""
        if self._core.lifecycle.state is not State.NEW:
            _LOGGER.warning(
                "method handlers for %s were not registered: method handlers cannot be "
                "registered once the server has started",
                service_name,
            )
            return
        self._core.registry.add_methods(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        """Bind ``address`` now and return its port (0 picks a free one).
        Raises RuntimeError if it cannot be bound, or once the server has started."""
        return self._core.add_port(address)

    def add_secure_port(self, address: str, server_credentials: Any) -> int:
        """Bind ``address`` for TLS (ALPN h2) with ``puregrpc.ssl_server_credentials(...)``
        (or an ``ssl.SSLContext``) and return its port, as ``add_insecure_port``."""
        if self._core.lifecycle.state is State.NEW:
            context = to_ssl_context(server_credentials)  # bad credentials: raise before binding
        else:
            context = None  # add_port raises the lifecycle's error
        return self._core.add_port(address, context)

    def add_drain_listener(self, listener: Callable[[], None]) -> None:
        """puregrpc extension: call ``listener()`` once when a drain begins (``stop()``,
        or the first signal of ``puregrpc.run``), on a helper thread; at once if it has
        begun already. The health service uses it to turn every service NOT_SERVING."""
        self._core.add_drain_listener(listener)

    def stats(self) -> ServerStats:
        """puregrpc extension: what the server has done so far (RPCs started, finished
        by code, in flight; connections; bytes). Cheap, from any thread."""
        return self._core.counters.snapshot()

    def add_rpc_observer(self, observer: RpcObserver) -> None:
        """puregrpc extension: tell ``observer`` of every RPC that finds a handler:
        ``rpc_started(method, grpc_type)`` then ``rpc_finished(record)``, on the I/O
        thread (keep them quick, never blocking). ``puregrpc.prometheus`` is one."""
        core = self._core
        with core.observers_lock:
            core.observers = (*core.observers, observer)


class Server(ServerBase):
    """A gRPC server; the same methods as ``grpc.Server``. Make one with ``puregrpc.server()``."""

    def start(self) -> None:
        """Start serving; does not block. ValueError if already started or stopped."""
        _register_with_grpcio()
        self._core.start()

    def stop(self, grace: Optional[float]) -> threading.Event:
        """Stop: refuse new RPCs now, cancel those still running after ``grace`` seconds
        (``None``: at once). Returns an Event set when the server has terminated."""
        return self._core.stop(grace)

    def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        """Block until the server terminates or ``timeout`` seconds pass.

        Returns True if the timeout passed, False if the server terminated
        (grpcio's contract: the opposite of ``threading.Event.wait``).
        Raises ``RuntimeError`` in a forked child on a server the parent started: it
        serves in the parent only, and would never terminate here.
        """
        core = self._core
        if core.lifecycle.state in (State.SERVING, State.DRAINING):
            core.io.check_running()
        return core.lifecycle.wait(timeout)

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is None:
            return
        if core.lifecycle.state is State.SERVING:
            # A collection can run this on any thread at any allocation, the I/O
            # thread included, in the middle of engine code: the drain begins on a
            # loop iteration of its own, never inline here.
            try:
                core.io.loop.call_soon_threadsafe(core.stop, math.inf)
            except RuntimeError:  # the loop is gone (interpreter exit)
                pass
        else:
            core.close_unstarted()


def server(
    thread_pool: Any,
    handlers: Optional[Sequence[Any]] = None,
    interceptors: Optional[Sequence[Any]] = None,
    options: Optional[Sequence[Tuple[str, Any]]] = None,
    maximum_concurrent_rpcs: Optional[int] = None,
    compression: Any = None,
    xds: bool = False,
) -> Server:
    """Create a server, as ``grpc.server(...)``; handlers run in ``thread_pool``.

    ``xds`` is accepted for grpcio's signature; puregrpc has no xDS support, so
    ``xds=True`` raises ``ValueError``."""
    if xds:
        raise ValueError(
            "puregrpc does not support xDS (xds=True); serve with xds=False, or use grpcio for an xDS-managed server"
        )
    core = ServerCore(thread_pool, interceptors or (), options or (), maximum_concurrent_rpcs, compression)
    _register_with_grpcio()
    srv = Server(core)
    if handlers:
        srv.add_generic_rpc_handlers(handlers)
    return srv


_registered = False


def _register_with_grpcio() -> None:
    """Where grpcio has been imported, make ``isinstance(x, grpc.ServicerContext)`` (and
    ``grpc.Server``, ``grpc.HandlerCallDetails``, ...) true for puregrpc's objects, as
    code written for grpcio checks. grpc's classes are ABCs: registering is enough.
    Called by ``server()`` and ``start()``: code that checks against grpc's classes has
    imported grpc by then (generated ``*_pb2_grpc`` modules do). puregrpc itself never
    imports grpcio, so a process that does not use it pays nothing."""
    global _registered
    grpc = sys.modules.get("grpc")
    if _registered or grpc is None:
        return
    _registered = True
    from ._context import ServicerContext
    from ._handlers import GenericRpcHandler, HandlerCallDetails, RpcMethodHandler, ServerInterceptor

    pairs = (
        (grpc.Server, Server),
        (grpc.ServicerContext, ServicerContext),
        (grpc.HandlerCallDetails, HandlerCallDetails),
        (grpc.RpcMethodHandler, RpcMethodHandler),
        (grpc.GenericRpcHandler, GenericRpcHandler),
        (grpc.ServerInterceptor, ServerInterceptor),
    )
    for abstract, concrete in pairs:
        register = getattr(abstract, "register", None)
        if register is not None:
            register(concrete)


def _stop_all_at_exit() -> None:
    """Interpreter exit (lifecycle.md 20): cancel every RPC before thread pools join."""
    for core in list(_live_cores):
        try:
            core.stop(0)
        except Exception:
            _LOGGER.exception("error stopping a server at interpreter exit")


def _register_exit_hook() -> None:
    # threading's exit hooks run in reverse order of registration, before
    # non-daemon threads are joined; concurrent.futures was imported above, so
    # ours runs before its pools wait for their workers.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_stop_all_at_exit)
    else:  # pragma: no cover - not CPython/PyPy
        import atexit

        atexit.register(_stop_all_at_exit)


_register_exit_hook()
