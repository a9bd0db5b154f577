"""One client connection on the I/O thread: socket <-> HTTP/2 engine <-> calls.

Runs on its loop's thread only. Requests become ``StreamCall`` objects that the
server dispatches (to a thread pool, or as tasks); everything a call writes comes
back through the engine and leaves at most once per loop iteration (at the end of the
read or burst of thread answers that made it: see ``LoopIO``'s batches), large DATA as views of the
handler's bytes: from Python 3.12 in one ``writelines``, before it in a write per large
view and one per run of small parts between them.
The connection implements ``CallLink`` for its calls, and knows its server only as
``ServerSide``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import socket
import sys
import threading
from typing import Any, Deque, Dict, List, Optional, Protocol, Set, Tuple, Union

from ._credentials import ALPN_H2, auth_properties
from ._h2 import events as ev
from ._h2.connection import H2Config, H2Connection
from ._h2.errors import ErrorCode
from ._h2.send_queue import SEND_VIEWS, Bytes
from ._loop import LoopIO
from ._options import ServerOptions
from ._protocol import (
    MessageDecoder,
    RequestHead,
    RequestRejected,
    RequestScan,
    read_request,
    trailers_only_block,
)
from ._stats import Counters, RpcObserver
from ._status import StatusCode

_LOGGER = logging.getLogger("puregrpc")

_MAX_STREAM_ID = 2**31 - 1
_SHUTDOWN_PING = b"puregrpc"
_KEEPALIVE_PING = b"keepaliv"
# How long a connection we closed keeps reading after its FIN (see Connection._close).
_LINGER = 2.0

# Before 3.12, asyncio's transports join what writelines() is given, so the output is
# written here as runs of small parts joined, with each large view on its own (its own
# send: while the transport's buffer is empty the socket takes it without a copy in
# Python); from 3.12 its socket transport sends the parts as they are (sendmsg).
_JOIN_PARTS = sys.version_info < (3, 12)

# Connections of one server still before their preface and SETTINGS; more are closed at
# once (slowloris: each one would otherwise hold a socket until its handshake timeout).
MAX_HANDSHAKING = 1000
# How long the first GOAWAY of the server's own drain (stop) waits for the PING ack
# before the final GOAWAY. New streams are refused from stop() on (lifecycle.md 12),
# so the wait only sets when the last stream id is named.
_GOAWAY_PING_TIMEOUT = 1.0
# A drain at a connection's age or idleness (gRFC A9) serves the streams the client
# opened before it read the first GOAWAY until the final one, which goes out at the
# latest this long after the first (20 s, as grpc-core's graceful GOAWAY), acked or
# not, calls in flight or not; grpc.max_connection_age_grace_ms still ends the
# connection at its grace.
_DRAIN_PING_TIMEOUT = 20.0
# How long an age or idle drain, once its PING is acked, waits with no call in flight
# and no new stream before the final GOAWAY (see Connection._drain_ping_acked).
_DRAIN_QUIET = 1.0
# How long a drain's GOAWAY waits for the first stream of a connection that has opened
# none (see begin_shutdown). Under puregrpc.run's 1 s wait for connections to close
# before the process exits, so that the GOAWAY and FIN reach the client before the exit.
_SETUP_WAIT = 0.5

# Unsent response bytes of one connection (DATA waiting for the client's flow-
# control window, plus the transport's buffer, plus messages handed over by
# handlers) above which its new calls are held, not run, until half of it drains.
# The connection is still read: WINDOW_UPDATE, RST_STREAM and PING must be heard.
OUTPUT_LIMIT = 4 << 20
# Request bytes one connection may hold received and not yet taken by handlers (whole
# messages queued and unfinished ones) while its streams still get credit ahead of their
# handlers. Past it, a stream's WINDOW_UPDATE waits until the connection is back under
# the bound, except for two leaders (see Connection.credit). The connection window is
# credited as bytes arrive, whatever their stream holds: what one call holds back never
# stalls the others.
CREDIT_LIMIT = 16 << 20
# Streams of one connection whose receive window may grow to STREAM_WINDOW_GROWN (a
# grown window is credit the client may use without asking): the bound stays a sum of
# constants, whatever the number of streams.
MAX_GROWN_STREAMS = 8
# Calls of one connection handed to the server (a thread pool's queue) and not yet
# started by a worker; more wait here, so that one client cannot fill the pool's
# queue ahead of every other client.
MAX_WAITING_FOR_WORKER = 32


class StreamCall(Protocol):
    """What a connection needs of a call (``_call.StreamCall`` implements it): the loop
    side only. The server makes them (``ServerSide.new_call``)."""

    stream_id: int
    done: bool
    completed: bool
    final_code: StatusCode
    awaiting_request: bool
    held_flow: int
    queued_bytes: int
    reading: bool  # its handler is blocked waiting for a message
    decoder: MessageDecoder
    due: Optional[float]  # its deadline in loop time

    def on_data(self, data: Union[bytes, List[memoryview]], flow_length: int, end_stream: bool) -> None: ...
    def on_end(self) -> None: ...
    def on_reset(self) -> None: ...
    def abort_loop(self, code: StatusCode, details: str) -> None: ...
    def window_opened_loop(self) -> None: ...
    def start_deadline(self) -> None: ...
    def expire(self) -> None: ...
    def handler_known(self, handler: Any) -> None: ...
    def request_here(self) -> bool: ...


class ServerSide(Protocol):
    """What a connection needs of its server (``_server.ServerCore`` implements it)."""

    io: LoopIO
    h2_config: H2Config
    options: ServerOptions
    counters: Counters
    max_receive: int
    max_send: int
    default_encoding: Optional[str]
    observers: Tuple[RpcObserver, ...]
    handshaking: int
    draining: bool
    active_rpcs: int
    max_concurrent_rpcs: Optional[int]

    def find_handler_on_loop(self, method: str) -> Tuple[bool, Optional[Any]]: ...
    def new_call(self, conn: Connection, stream_id: int, head: RequestHead, request_ended: bool) -> StreamCall: ...
    def dispatch(self, call: Any) -> None: ...  # a call its new_call() made
    def connection_opened(self, conn: Connection) -> None: ...
    def connection_closed(self, conn: Connection) -> None: ...
    def call_finished(self, completed: bool, code: StatusCode) -> None: ...


def _peer_name(transport: asyncio.BaseTransport) -> str:
    sock = transport.get_extra_info("socket")
    peer = transport.get_extra_info("peername")
    family = getattr(sock, "family", None)
    if family == socket.AF_INET and peer:
        return f"ipv4:{peer[0]}:{peer[1]}"
    if family == socket.AF_INET6 and peer:
        return f"ipv6:[{peer[0]}]:{peer[1]}"
    if family == socket.AF_UNIX:
        name = transport.get_extra_info("sockname") or ""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name.startswith("\0"):
            return "unix-abstract:" + name[1:]
        return "unix:" + name
    return "unknown"


def _write_gathered(transport: asyncio.WriteTransport, parts: List[Bytes]) -> None:
    """Write ``parts`` in order: each run of small ones joined into one write, each
    view of SEND_VIEWS bytes or more written as it is (see _JOIN_PARTS)."""
    start = 0
    for index, part in enumerate(parts):
        if len(part) >= SEND_VIEWS:
            if index > start:
                transport.write(b"".join(parts[start:index]))
            transport.write(part)
            start = index + 1
    if start < len(parts):
        transport.write(b"".join(parts[start:]) if start < len(parts) - 1 else parts[start])


def _write_parts(transport: asyncio.WriteTransport, parts: List[Bytes]) -> bool:
    """Hand ``parts`` (at least one) to the transport in order; False, writing nothing,
    where it is closing.

    A transport that failed (a read error aborts it) is closing before our
    connection_lost runs, a callback later; a flush in between must not reach it. Its
    ``writelines`` (3.12, 3.13) does not check for that: it registers the socket for
    writing after asyncio has let go of it, and once the socket is closed that stale
    registration breaks the next connection given the same file descriptor (ENOENT in
    the selector, so it is never read)."""
    if transport.is_closing():
        return False
    if len(parts) == 1:
        transport.write(parts[0])
    elif _JOIN_PARTS:
        _write_gathered(transport, parts)
    else:
        # The last part through write(): it pauses us past the transport's
        # high-water mark, which asyncio's writelines() does not (3.12, 3.13).
        transport.writelines(parts[:-1])
        transport.write(parts[-1])
    return True


class Connection(asyncio.Protocol):
    # Slots: more attributes than the 30 keys CPython shares between instances, whose
    # attribute reads are then dict lookups (see CallCore). __weakref__: ServerCore.opening.
    __slots__ = (
        "__weakref__",
        "_age_due",
        "_age_grace_due",
        "_auth",
        "_close_when_flushed",
        "_credit_held",
        "_credit_lock",
        "_deadline_due",
        "_drain_acked",
        "_engine_refused",
        "_final_goaway_sent",
        "_finish_after_setup",
        "_handshake_due",
        "_handshaking",
        "_identity_key",
        "_idle_due",
        "_idle_since",
        "_keepalive_due",
        "_last_processed",
        "_last_read",
        "_linger",
        "_new",
        "_out_lock",
        "_ping_ack_due",
        "_ping_timer",
        "_posted_out",
        "_quiet_timer",
        "_reader",
        "_rebalance_posted",
        "_request",
        "_setup_wait",
        "_setup_waited",
        "_timer",
        "_timer_when",
        "_waiting",
        "blocked",
        "calls",
        "closed",
        "core",
        "grown_streams",
        "h2",
        "held",
        "io",
        "output_level",
        "paused",
        "peer",
        "refusing",
        "settings",
        "shutting_down",
        "transport",
        "unread",
    )

    def __init__(self, core: ServerSide) -> None:
        self.core = core
        self.settings = core
        self.io = core.io
        self.h2 = H2Connection(core.h2_config)
        # uvloop's transports implement asyncio.Transport's methods without
        # subclassing it, so the transport is typed by what we use, not checked.
        self.transport: Optional[Any] = None
        self.peer = "unknown"
        self.calls: Dict[int, StreamCall] = {}
        self.blocked: Set[StreamCall] = set()
        # Calls not dispatched yet: waiting for output to drain, or for a worker.
        self.held: Deque[StreamCall] = collections.deque()
        self._new: List[StreamCall] = []  # calls to dispatch once this read is handled
        self._waiting = 0  # dispatched, not started by a worker (under _out_lock)
        self.output_level = 0  # engine + transport bytes unsent, as of the last flush
        self._posted_out = 0  # response bytes handlers posted that the loop has not taken
        self._out_lock = threading.Lock()
        # Request bytes received and not taken by handlers, all calls (see CREDIT_LIMIT);
        # handlers' threads take from it, hence the lock.
        self.unread = 0
        self._credit_lock = threading.Lock()
        self._credit_held: Dict[StreamCall, None] = {}  # calls whose stream credit waits, oldest first
        # The calls credited past the bound (see credit): one reader, one request.
        self._reader: Optional[StreamCall] = None
        self._request: Optional[StreamCall] = None
        self._rebalance_posted = False  # a _rebalance is queued on the loop (under _credit_lock)
        self.grown_streams = 0  # streams whose window grew (MAX_GROWN_STREAMS)
        self.paused = False
        self.closed = False
        self.shutting_down = False
        self.refusing = False  # the server is draining: new streams get REFUSED_STREAM
        self._final_goaway_sent = False
        self._ping_timer: Optional[asyncio.TimerHandle] = None
        self._drain_acked = False  # an age or idle drain's PING was acked
        self._quiet_timer: Optional[asyncio.TimerHandle] = None
        # A drain waiting for the client to finish setting the connection up (begin_shutdown).
        self._setup_wait: Optional[asyncio.TimerHandle] = None
        self._finish_after_setup = False  # the server terminated meanwhile
        self._setup_waited = False  # once only
        # The highest stream answered: the final GOAWAY's last stream id (streams the
        # drain refused were not processed, RFC 9113 6.8).
        self._last_processed = 0
        self._engine_refused = 0  # the engine's streams_refused, as counted so far
        # Connection management (gRFC A8/A9): one timer per connection, armed for the
        # earliest of these due times (loop clock); None: nothing due.
        self._timer: Optional[asyncio.TimerHandle] = None
        self._timer_when = math.inf
        self._handshake_due: Optional[float] = None
        self._keepalive_due: Optional[float] = None
        self._ping_ack_due: Optional[float] = None
        self._idle_due: Optional[float] = None
        self._idle_since = 0.0
        self._age_due: Optional[float] = None
        self._age_grace_due: Optional[float] = None
        self._deadline_due: Optional[float] = None  # the earliest deadline of its calls, or later
        self._last_read = 0.0
        self._handshaking = False
        self._linger: Optional[asyncio.TimerHandle] = None
        self._close_when_flushed: Optional[asyncio.TimerHandle] = None
        self._auth: Optional[Dict[str, List[bytes]]] = None  # TLS only
        self._identity_key: Optional[str] = None

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.peer = _peer_name(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            if ssl_object.selected_alpn_protocol() != ALPN_H2:
                # gRPC needs HTTP/2 negotiated by ALPN (client without it, or HTTP/1.1 only)
                _LOGGER.info("closing TLS connection from %s: ALPN h2 was not negotiated", self.peer)
                self.closed = True
                transport.abort()
                return
            self._auth, self._identity_key = auth_properties(ssl_object)
        core = self.core
        if core.handshaking >= MAX_HANDSHAKING:
            _LOGGER.warning(
                "closing connection from %s: %d connections are still in their handshake", self.peer, core.handshaking
            )
            self.closed = True
            transport.abort()
            return
        core.handshaking += 1
        self._handshaking = True
        self._arm_timers()
        self.core.connection_opened(self)
        self.h2.initiate_connection()
        if self.core.draining:
            self.begin_shutdown()
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        io = self.io
        io.begin_batch()
        try:
            self._received(data)
        finally:
            io.end_batch(self)  # the output of this read, and of handlers it ran

    def _received(self, data: bytes) -> None:
        new_calls = self._new
        self.core.counters.bytes_received += len(data)
        now = self._last_read = self.io.loop.time()
        events = self.h2.receive_data(data, now)
        if self.h2.streams_refused != self._engine_refused:
            self.core.counters.streams_refused += self.h2.streams_refused - self._engine_refused
            self._engine_refused = self.h2.streams_refused
        if self._handshaking and self.h2.handshake_done:
            self._end_handshake()
        calls = self.calls
        for event in events:
            if isinstance(event, ev.DataReceived):
                call = calls.get(event.stream_id)
                if call is not None:
                    pieces = event.pieces
                    call.on_data(event.data if pieces is None else pieces, event.flow_length, event.end_stream)
                else:
                    self.h2.acknowledge_received_data(event.stream_id, event.flow_length)
            elif isinstance(event, ev.RequestReceived):
                call = self._open_call(event)
                if call is not None and not call.awaiting_request:
                    new_calls.append(call)
            elif isinstance(event, ev.WindowUpdated):  # only where DATA waits for window
                if self.blocked:
                    self._window_opened()
            elif isinstance(event, ev.RequestHeadersTooLarge):
                self._refuse_oversized(event)
            elif isinstance(event, (ev.TrailersReceived, ev.StreamReset)):
                call = calls.get(event.stream_id)
                if call is not None:
                    if isinstance(event, ev.TrailersReceived):
                        call.on_end()
                    else:
                        call.on_reset()
            elif isinstance(event, ev.PingAcked):
                if event.data == _SHUTDOWN_PING:
                    self._drain_ping_acked()
                elif event.data == _KEEPALIVE_PING:
                    self._ping_ack_due = None
            elif isinstance(event, ev.ConnectionTerminated):
                _LOGGER.info("closing connection from %s: %s", self.peer, event.message)
                self.flush()
                self._close()
                return
        if new_calls:
            # Before the flush (data_received's end_batch): a handler that runs at once
            # (puregrpc.aio's eager tasks) has its response in the same write.
            self._new = []
            for call in new_calls:
                if not call.done:
                    self._dispatch(call)

    def eof_received(self) -> Optional[bool]:
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        if self._setup_wait is not None:
            self._setup_wait.cancel()
            self._setup_wait = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self._close_when_flushed is not None:
            self._close_when_flushed.cancel()
            self._close_when_flushed = None
        if self._handshaking:
            self._handshaking = False
            self.core.handshaking -= 1
        self.held.clear()
        for call in list(self.calls.values()):
            call.on_reset()
        self.core.connection_closed(self)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        for call in list(self.calls.values()):
            call.window_opened_loop()
        self.mark_dirty()  # recount the output level: held calls may run

    # -- streams ---------------------------------------------------------------
    def _open_call(self, event: ev.RequestReceived) -> Optional[StreamCall]:
        sid = event.stream_id
        if self.refusing:
            if self._setup_wait is not None:
                # The client uses the connection now (begin_shutdown): the drain's GOAWAY
                # goes out, naming no stream, then REFUSED_STREAM for this one (lifecycle.md
                # 12); the client may retry it elsewhere.
                self._setup_done(refused=sid)
                return None
            # lifecycle.md 12: no new RPC reaches a handler once stop() is called;
            # REFUSED_STREAM tells the client it may retry elsewhere.
            self._refuse(sid)
            return None
        if self._final_goaway_sent:
            # Reported by the engine before the final GOAWAY went out in this read (the
            # engine refuses later ones itself). That GOAWAY named the streams before it:
            # the client counts this one unprocessed and may retry it elsewhere, so it
            # must not run here too (RFC 9113 6.8).
            self._refuse(sid)
            return None
        self._last_processed = sid
        memo = event.memo
        scan: Optional[RequestScan] = None if memo is None else memo[0]
        try:
            if scan is not None and scan.head is not None and event.memo_fields == len(event.headers):
                head = scan.head  # a block sent before: by far the most common
            else:
                head = read_request(event.headers, memo, event.memo_fields)
        except RequestRejected as exc:
            block = trailers_only_block(exc.http_status, "application/grpc", exc.code.value[0], exc.message)
            self.h2.send_headers(sid, block, end_stream=True)
            if not event.end_stream:
                self.h2.reset_stream(sid, ErrorCode.NO_ERROR)
            return None
        core = self.core
        if core.max_concurrent_rpcs is not None and core.active_rpcs >= core.max_concurrent_rpcs:
            block = trailers_only_block(
                200, "application/grpc", StatusCode.RESOURCE_EXHAUSTED.value[0], "Concurrent RPC limit exceeded!"
            )
            self.h2.send_headers(sid, block, end_stream=True)
            if not event.end_stream:
                self.h2.reset_stream(sid, ErrorCode.NO_ERROR)
            return None
        call = core.new_call(self, sid, head, event.end_stream)
        self.calls[sid] = call
        core.active_rpcs += 1
        core.counters.started += 1
        call.start_deadline()
        # Where finding the handler needs no user code (no interceptors), it happens
        # here: an unknown method is answered at once, even when every worker is busy.
        known, handler = core.find_handler_on_loop(head.method)
        if known:
            if handler is None:
                call.abort_loop(StatusCode.UNIMPLEMENTED, "Method not found!")
                return None
            call.handler_known(handler)
        return call

    def _refuse(self, sid: int) -> None:
        """RST_STREAM REFUSED_STREAM: the stream was not processed (RFC 9113 8.7)."""
        self.h2.reset_stream(sid, ErrorCode.REFUSED_STREAM)
        self.core.counters.streams_refused += 1

    def _refuse_oversized(self, event: ev.RequestHeadersTooLarge) -> None:
        """RFC 9113 10.5.1: only this stream is refused, with the status grpcio gives."""
        message = (
            f"request metadata of {event.size} bytes is larger than the server's limit of "
            f"{event.limit} bytes (grpc.max_metadata_size)"
        )
        code = StatusCode.RESOURCE_EXHAUSTED.value[0]
        self._last_processed = event.stream_id
        self.h2.send_headers(event.stream_id, trailers_only_block(200, "application/grpc", code, message), True)
        if not event.end_stream:
            self.h2.reset_stream(event.stream_id, ErrorCode.NO_ERROR)

    # -- dispatch: to the server once the request and a worker can be had ----------
    def _dispatch(self, call: StreamCall) -> None:
        if self.held or self.output_over_limit():
            self.held.append(call)
            return
        with self._out_lock:
            if self._waiting >= MAX_WAITING_FOR_WORKER:
                self.held.append(call)
                return
            self._waiting += 1
        self.core.dispatch(call)

    def request_ready(self, call: StreamCall) -> None:
        """Loop: the request message of a call waiting for it has come."""
        self._new.append(call)

    def await_request(self, call: StreamCall) -> None:
        """Loop: a call found its unary handler on a worker before its request came."""
        if call.done:
            return
        if call.request_here():
            self._dispatch(call)
        else:
            call.awaiting_request = True
            if self._credit_held:
                self._rebalance()  # its request's credit may be held: it may lead

    def worker_started(self) -> None:
        """Any thread: a dispatched call has begun (a worker took it)."""
        with self._out_lock:
            self._waiting -= 1
            wake = bool(self.held)
        if wake:
            self.io.post(self._release_held)

    def stream_blocked(self, call: StreamCall, blocked: bool) -> None:
        if blocked:
            self.blocked.add(call)
        else:
            self.blocked.discard(call)

    def call_done(self, call: StreamCall) -> None:
        if self.calls.pop(call.stream_id, None) is not None:
            self.blocked.discard(call)
            self.core.call_finished(call.completed, call.final_code)
            idle = self.core.options.max_connection_idle
            if idle is not None and not self.calls and not self.closed:
                self._idle_since = self.io.loop.time()
                if self._idle_due is None:
                    self._idle_due = self._idle_since + idle
                    self._schedule()
            if self.shutting_down and not self.calls:
                if self._final_goaway_sent:
                    self.mark_dirty()
                    self.io.loop.call_soon(self._close_if_idle)
                elif self._drain_acked:
                    self._arm_quiet()

    def _window_opened(self) -> None:
        for call in list(self.blocked):
            call.window_opened_loop()

    # -- connection management: handshake, keepalive, idle, age (one timer) -------
    def _arm_timers(self) -> None:
        opts = self.core.options
        now = self._last_read = self._idle_since = self.io.loop.time()
        self._handshake_due = now + opts.handshake_timeout
        if opts.keepalive_time is not None:
            self._keepalive_due = now + opts.keepalive_time
        if opts.max_connection_idle is not None:
            self._idle_due = now + opts.max_connection_idle
        if opts.max_connection_age is not None:
            # gRFC A9: +-10 % jitter, so connections made together do not all leave together.
            self._age_due = now + opts.max_connection_age * random.uniform(0.9, 1.1)
        self._schedule()

    def _end_handshake(self) -> None:
        self._handshaking = False
        self.core.handshaking -= 1
        self._handshake_due = None  # the timer, if armed for it, finds nothing due

    def deadline_added(self, due: float) -> None:
        """A call's deadline (loop time): the timer is armed for it if it is the earliest.
        A call that ends sooner leaves its deadline behind; the timer then finds nothing
        due, and re-arms for the earliest of the calls still running."""
        if self._deadline_due is None or due < self._deadline_due:
            self._deadline_due = due
            self._schedule()

    def _expire_calls(self, now: float) -> None:
        earliest: Optional[float] = None
        for call in list(self.calls.values()):
            due = call.due
            if due is None or call.done:
                continue
            if due <= now:
                call.expire()
            elif earliest is None or due < earliest:
                earliest = due
        self._deadline_due = earliest

    def _schedule(self) -> None:
        """Arm the timer for the earliest due time, unless it is armed sooner already
        (a timer that fires early finds nothing due and re-arms: cheaper than moving it)."""
        due = min(
            (
                d
                for d in (
                    self._handshake_due,
                    self._keepalive_due,
                    self._ping_ack_due,
                    self._idle_due,
                    self._age_due,
                    self._age_grace_due,
                    self._deadline_due,
                )
                if d is not None
            ),
            default=math.inf,
        )
        if due >= self._timer_when or due == math.inf or self.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = due
        self._timer = self.io.loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        if self.closed:
            return
        opts = self.core.options
        now = self.io.loop.time()
        if self._handshake_due is not None and now >= self._handshake_due:
            _LOGGER.info(
                "closing connection from %s: no HTTP/2 preface and SETTINGS within %g s "
                "(grpc.server_handshake_timeout_ms)",
                self.peer,
                opts.handshake_timeout,
            )
            self._abort_transport()
            return
        if self._ping_ack_due is not None and now >= self._ping_ack_due:
            _LOGGER.info(
                "closing connection from %s: keepalive PING not acknowledged within %g s (grpc.keepalive_timeout_ms)",
                self.peer,
                opts.keepalive_timeout,
            )
            self._abort_transport()
            return
        keepalive = opts.keepalive_time
        if keepalive is not None and self._keepalive_due is not None and now >= self._keepalive_due:
            quiet_until = self._last_read + keepalive
            if quiet_until > now:
                self._keepalive_due = quiet_until
            else:
                if self._ping_ack_due is None and (self.calls or opts.keepalive_permit_without_calls):
                    self.h2.ping(_KEEPALIVE_PING)
                    self._ping_ack_due = now + opts.keepalive_timeout
                    self.mark_dirty()
                self._keepalive_due = now + keepalive
        idle = opts.max_connection_idle
        if idle is not None and self._idle_due is not None and now >= self._idle_due:
            if self.calls:
                self._idle_due = None  # busy: armed again when its last RPC ends
            elif now - self._idle_since >= idle:
                self._idle_due = None
                _LOGGER.debug("connection from %s idle for %g s: GOAWAY (grpc.max_connection_idle_ms)", self.peer, idle)
                self.begin_shutdown(refuse_new=False)
            else:
                self._idle_due = self._idle_since + idle
        if self._age_due is not None and now >= self._age_due:
            self._age_due = None
            _LOGGER.debug("connection from %s reached its age: GOAWAY (grpc.max_connection_age_ms)", self.peer)
            self.begin_shutdown(refuse_new=False)
            if opts.max_connection_age_grace is not None:
                self._age_grace_due = now + opts.max_connection_age_grace
        if self._deadline_due is not None and now >= self._deadline_due:
            self._expire_calls(now)
        if self._age_grace_due is not None and now >= self._age_grace_due:
            self._age_grace_due = None
            self.abort_all(
                StatusCode.UNAVAILABLE, "the connection reached its maximum age (grpc.max_connection_age_grace_ms)"
            )
            self.flush()
            self._close()
            return
        self._schedule()

    def _abort_transport(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()

    # -- output bound (see OUTPUT_LIMIT) -------------------------------------------
    def output_posted(self, length: int) -> None:
        """Handler thread: a response message is on its way to the loop."""
        with self._out_lock:
            self._posted_out += length

    def output_taken(self, length: int) -> None:
        """Loop: a posted response message was handed to the engine."""
        with self._out_lock:
            self._posted_out -= length
        # Unsent output now, until the next flush measures it: counted at once, so that
        # held calls released before that flush (worker_started) see it.
        self.output_level += length

    def output_added(self, length: int) -> None:
        """Loop: a response message went to the engine without being posted (a handler
        that runs on the loop): unsent output, as in ``output_taken``."""
        self.output_level += length

    def output_over_limit(self) -> bool:
        """Any thread; a snapshot, good enough for a bound."""
        return self.output_level + self._posted_out > OUTPUT_LIMIT

    def hold(self, call: StreamCall) -> None:
        """Loop: run ``call`` once the connection's output has drained."""
        if not call.done and not self.closed:
            self.held.append(call)
            self.mark_dirty()

    def _release_held(self) -> None:
        held = self.held
        while held and not self.output_over_limit():
            with self._out_lock:
                if self._waiting >= MAX_WAITING_FOR_WORKER:
                    return  # worker_started releases more
                call = held.popleft()
                if call.done:
                    continue
                self._waiting += 1
            self.core.dispatch(call)

    # -- request credit (see CREDIT_LIMIT) ------------------------------------------
    # What a connection holds of requests is bounded by CREDIT_LIMIT, plus two leaders'
    # messages, plus what the client may send without credit: the streams' windows
    # (max_concurrent_streams x lookahead_bytes, and MAX_GROWN_STREAMS grown ones).
    #
    # Past the bound, two calls at a time are still credited, so that no call waits
    # for credit that only another call's progress could free:
    # - the reader: a handler blocked reading (its queue is empty), until the message
    #   it waits for is whole; it takes it at once, so this frees the slot;
    # - the request: a unary call whose dispatch waits for its request message, until
    #   a handler has taken it (it may wait for a worker the readers will free).
    def unread_added(self, length: int) -> None:
        """The loop received ``length`` request bytes for a call (negative: dropped)."""
        with self._credit_lock:
            self.unread += length

    def request_taken(self, length: int) -> None:
        """A handler took a message (any thread). Under pressure, the loop looks again
        at the credit held back; otherwise this is one lock and a subtraction."""
        with self._credit_lock:
            self.unread -= length
            if not self._credit_held or self._rebalance_posted:
                return
            self._rebalance_posted = True
        self.io.post(self._rebalance)

    def reader_waiting(self) -> None:
        """A handler blocks for its next message (any thread): it may lead."""
        with self._credit_lock:
            if not self._credit_held or self._rebalance_posted:
                return
            self._rebalance_posted = True
        self.io.post(self._rebalance)

    def credit(self, call: StreamCall, length: int) -> None:
        """Give ``call``'s stream credit for ``length`` bytes received: now if the
        connection is under CREDIT_LIMIT or the call leads, else once it is or does.
        A call holds credit (``held_flow``) exactly while it is in ``_credit_held``."""
        if length <= 0:
            return
        with self._credit_lock:
            # Decided and recorded under the lock that request_taken holds: a handler
            # taking a message at this moment either brings us under the bound first
            # or sees this call held and has the loop look again.
            hold = self.unread > CREDIT_LIMIT and call is not self._reader and call is not self._request
            if hold:
                call.held_flow += length
                self._credit_held[call] = None
        if not hold:
            self.h2.acknowledge_stream_data(call.stream_id, length)
        elif self._reader is None and call.reading:
            self._reader = call
            self._release_credit(call)
        elif call.awaiting_request and self._request_slot_free():
            self._request = call
            self._release_credit(call)

    def leads(self, call: StreamCall) -> bool:
        """Whether ``call`` is credited past the bound (see credit)."""
        return call is self._reader or call is self._request

    def request_ended(self, call: StreamCall) -> None:
        """No more DATA can come on ``call``: stream credit would be of no use to it."""
        call.held_flow = 0
        self._credit_held.pop(call, None)
        if call is self._reader:
            self._reader = None
            self._rebalance()

    def message_completed(self, call: StreamCall) -> None:
        """A message of ``call`` is whole: if it led as the reader, another may."""
        if call is self._reader:
            self._reader = None
            self._rebalance()

    def credit_ended(self, call: StreamCall, unread: int) -> None:
        """``call`` ended holding ``unread`` bytes: they no longer count."""
        if call.held_flow:
            call.held_flow = 0
            self._credit_held.pop(call, None)
        if call is self._reader:
            self._reader = None
        if call is self._request:
            self._request = None
        if unread:
            with self._credit_lock:
                self.unread -= unread
        if self._credit_held:
            self._rebalance()

    def _request_slot_free(self) -> bool:
        """Whether no unary request leads (one whose handler took its message or that
        ended no longer does: that is learnt here, not told)."""
        request = self._request
        if request is not None and (request.done or (not request.awaiting_request and not request.queued_bytes)):
            self._request = request = None
        return request is None

    def _release_credit(self, call: StreamCall) -> None:
        length, call.held_flow = call.held_flow, 0
        self._credit_held.pop(call, None)
        if length and not call.done:
            self.h2.acknowledge_stream_data(call.stream_id, length)
            self.mark_dirty()

    def _rebalance(self) -> None:
        """Under the bound again: every held call gets its credit, oldest first. Still
        over it: an empty leader slot goes to the oldest held call that qualifies."""
        with self._credit_lock:
            self._rebalance_posted = False
            under = self.unread <= CREDIT_LIMIT
        self._request_slot_free()
        if under:
            for call in list(self._credit_held):
                self._release_credit(call)
            return
        for call in list(self._credit_held):
            if self._reader is None and call.reading and not call.done:
                self._reader = call
                self._release_credit(call)
            elif call.awaiting_request and not call.done and self._request is None:
                self._request = call
                self._release_credit(call)

    def may_grow(self, call: StreamCall) -> bool:
        """Whether ``call``'s stream may be one more whose window grows: one of at most
        MAX_GROWN_STREAMS, while the connection is well under its bound, or if the call
        leads (its message is credited anyway: the window may as well fit it)."""
        if self.grown_streams >= MAX_GROWN_STREAMS:
            return False
        return self.unread <= CREDIT_LIMIT // 2 or call is self._reader or call is self._request

    # -- output ----------------------------------------------------------------
    def mark_dirty(self) -> None:
        self.io.mark_dirty(self)

    def flush(self) -> None:
        if self.closed or self.transport is None:
            return
        parts = self.h2.parts_to_send()
        if parts and _write_parts(self.transport, parts):
            self.core.counters.bytes_sent += sum(map(len, parts))
        self.output_level = self.h2.pending_total + self.transport.get_write_buffer_size()
        if self.held and self.output_level + self._posted_out <= OUTPUT_LIMIT // 2:
            self._release_held()
        if self._close_when_flushed is not None and not self.h2.pending_total:
            self._close_when_flushed.cancel()
            self._close_when_flushed = None
            self._close()

    def _close(self) -> None:
        """Close after the final GOAWAY. Where the transport can half-close, send FIN and
        go on reading (and discarding) until the peer closes too or _LINGER passes:
        closing a socket with unread input makes the kernel send a TCP reset, which can
        destroy responses the peer has received but not yet read (RFC 9113 6.8)."""
        if not self.closed and self.transport is not None:
            self.closed = True
            transport = self.transport
            try:
                if transport.can_write_eof():
                    transport.write_eof()
                    self._linger = self.io.loop.call_later(_LINGER, transport.abort)
                    return
            except OSError:  # the peer is gone already (ENOTCONN, EPIPE): nothing to wait for
                transport.abort()
                return
            transport.close()

    # -- graceful shutdown (RFC 9113 6.8) --------------------------------------
    def begin_shutdown(self, refuse_new: bool = True) -> None:
        """First GOAWAY (last-stream-id 2^31-1) and a PING; the final GOAWAY follows
        on the PING's ack (or after a timeout), naming the last stream accepted.

        ``refuse_new`` (the server drains, lifecycle.md 12): streams that arrive from
        now on get REFUSED_STREAM, and an idle connection gets its final GOAWAY at
        once. Otherwise (connection age or idleness, gRFC A9) streams the client opened
        before it saw the first GOAWAY are served, and the final GOAWAY waits for the
        PING's round trip even when no RPC is running."""
        if self.closed:
            return
        if refuse_new:
            self.refusing = True
            if not self._setup_waited and not self.h2.last_stream_id:
                # A connection that has opened no stream yet: its client may still be
                # setting it up, and grpcio's client, given a GOAWAY then (even just after
                # its SETTINGS ACK), can hang its first call until the deadline. Seen in
                # rolling restarts, where new connections reach a worker as it drains. So
                # the GOAWAY waits for the client's first stream (proof that it uses the
                # connection), or at most _SETUP_WAIT.
                if self._setup_wait is None:
                    self._setup_wait = self.io.loop.call_later(_SETUP_WAIT, self._setup_done)
                return
        if self.shutting_down:
            if refuse_new:
                if not self.calls:
                    self._send_final_goaway()
                elif self._ping_timer is not None:
                    # An age or idle drain's wait for the ack: the server's stop waits less.
                    due = self.io.loop.time() + _GOAWAY_PING_TIMEOUT
                    if self._ping_timer.when() > due:
                        self._ping_timer.cancel()
                        self._ping_timer = self.io.loop.call_at(due, self._send_final_goaway)
            return
        self.shutting_down = True
        self.h2.goaway(_MAX_STREAM_ID, ErrorCode.NO_ERROR)
        self.h2.ping(_SHUTDOWN_PING)
        if refuse_new and not self.calls:
            # Idle: nothing to wait for, so the final GOAWAY goes out at once.
            self._send_final_goaway()
        else:
            wait = _GOAWAY_PING_TIMEOUT if refuse_new else _DRAIN_PING_TIMEOUT
            self._ping_timer = self.io.loop.call_later(wait, self._send_final_goaway)
        self.mark_dirty()

    def _drain_ping_acked(self) -> None:
        """The client has read the first GOAWAY, and opens no stream after it. But
        grpc-core's client writes control frames (this ack) ahead of the HEADERS of
        streams it started before it read that GOAWAY, which can then come behind other
        streams' DATA, well after the ack. So an age or idle drain goes on serving new
        streams, and sends the final GOAWAY naming the last one only once no call has
        been in flight, and no stream has arrived, for _DRAIN_QUIET (or when the first
        GOAWAY's _DRAIN_PING_TIMEOUT ends). Refused, such a stream is left to the
        client's retry, which grpcio's does not always make."""
        if self._final_goaway_sent or self.closed:
            return
        if self.refusing:  # stop(): new streams are refused anyway
            self._send_final_goaway()
            return
        self._drain_acked = True
        if not self.calls:
            self._arm_quiet()

    def _arm_quiet(self) -> None:
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
        self._quiet_timer = self.io.loop.call_later(_DRAIN_QUIET, self._quiet_elapsed)

    def _quiet_elapsed(self) -> None:
        self._quiet_timer = None
        if not self.calls:  # else the last call to end arms it again (call_done)
            self._send_final_goaway()

    def _send_final_goaway(self) -> None:
        if self._final_goaway_sent or self.closed:
            return
        self._final_goaway_sent = True
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None
        self.h2.goaway(self._last_processed, ErrorCode.NO_ERROR)
        self.mark_dirty()
        if not self.calls:
            self.io.loop.call_soon(self._close_if_idle)

    def _close_if_idle(self) -> None:
        if not self.calls:
            self.flush()
            if self.h2.pending_total and not self.closed:
                # Finished responses still wait for the client's flow-control window:
                # close once they are out (flush), or give up after _LINGER.
                if self._close_when_flushed is None:
                    self._close_when_flushed = self.io.loop.call_later(_LINGER, self._close)
                return
            self._close()

    def _setup_done(self, refused: int = 0) -> None:
        """The client has opened a stream (or was given the time to): the drain's GOAWAY
        goes out now (begin_shutdown), and the close follows if the server has
        terminated meanwhile."""
        if self._setup_wait is not None:
            self._setup_wait.cancel()
            self._setup_wait = None
        self._setup_waited = True
        if self.closed:
            return
        self.begin_shutdown()
        if refused:
            self._refuse(refused)  # after the GOAWAYs
        if self._finish_after_setup:
            self.finish_shutdown()
        self.mark_dirty()

    def finish_shutdown(self) -> None:
        """The server terminated: final GOAWAY now, close once idle."""
        if self._setup_wait is not None:
            self._finish_after_setup = True  # _setup_done finishes it
            return
        self._send_final_goaway()
        self._close_if_idle()

    def abort_all(self, code: StatusCode, details: str) -> None:
        for call in list(self.calls.values()):
            call.abort_loop(code, details)

    # -- security (filled in by TLS connections) --------------------------------
    def peer_identities(self) -> Optional[List[bytes]]:
        if self._identity_key is None or self._auth is None:
            return None
        return list(self._auth[self._identity_key])

    def peer_identity_key(self) -> Optional[str]:
        return self._identity_key

    def auth_context(self) -> Dict[str, List[bytes]]:
        if self._auth is None:
            # What grpcio's server reports on an insecure port.
            return {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]}
        return {key: list(values) for key, values in self._auth.items()}
