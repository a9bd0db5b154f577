"""The call core: one RPC's state, shared by the sync and the asyncio flavour.

A ``CallCore`` holds what every RPC has whoever runs its handler: the request
queue and its flow credit, the response framing and its write budget, the status
and trailers, the deadline. It talks to its connection only through ``CallLink``
(commands to the HTTP/2 engine and to the connection's bounds), and never runs a
handler: an adapter does (``_sync_call.SyncDriver`` on a thread pool,
``_aio_call.TaskDriver`` as a task on the loop).

Methods named ``on_*`` and ``*_loop`` run on the loop's thread only; they own
the wire (``done``, the HTTP/2 stream). The others run on the handler's side and
reach the loop through ``to_loop`` (a post to the loop for a thread, a direct call
for a task). State shared by both (the request queue, ``active``, the write budget)
is guarded by ``lock``. Backpressure both ways: the loop stops acknowledging
request data (no WINDOW_UPDATE) while too much is queued unread, and a handler
writing responses waits while too much is queued unsent.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from _thread import RLock  # the C class itself: threading.RLock() is a Python call making one
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Sequence, Tuple, Union

from ._callbacks import run_callbacks
from ._compression import DecompressionError, MessageTooLarge, compress, decompress
from ._errors import AbortError, IterationError, RpcError, Stop
from ._h2.connection import H2Connection
from ._h2.errors import ErrorCode
from ._loop import LoopIO
from ._protocol import (
    Framed,
    MessageDecoder,
    ProtocolViolation,
    RequestHead,
    encode_metadata,
    frame_for_wire,
    framed_size,
    response_headers_block,
    trailers_block,
    trailers_only_block,
)
from ._stats import RpcObserver, RpcRecord, grpc_type
from ._status import StatusCode

_LOGGER = logging.getLogger("puregrpc")
# One INFO line per finished RPC when enabled (``puregrpc serve --access-log``, or this
# logger's level set to INFO): peer, method, status, duration, messages in and out. Its
# own level is WARNING, so a root logger at INFO does not turn it on; off, it costs one
# cached level check per RPC.
_ACCESS = logging.getLogger("puregrpc.access")
_ACCESS.setLevel(logging.WARNING)

# Request bytes queued unread before the loop withholds WINDOW_UPDATE.
REQUEST_QUEUE_LIMIT = 1 << 20
# A call whose handler has taken this many request bytes, with none withheld from its
# sender since (see REQUEST_QUEUE_LIMIT), gets a receive window of STREAM_WINDOW_GROWN: its
# sender then never waits for a WINDOW_UPDATE, and gets one per 2 MiB rather than per
# half of the initial window (1 MiB client-streaming: grpcio's client spent more CPU on
# our WINDOW_UPDATEs than on its messages). A message larger than the initial window
# grows it to fit (up to STREAM_WINDOW_GROWN). At most _connection.MAX_GROWN_STREAMS
# streams of a connection grow, so its bound stays a sum of constants (CREDIT_LIMIT).
GROW_WINDOW_AFTER = 1 << 20
STREAM_WINDOW_GROWN = 4 << 20
# Response bytes queued unsent before a writing handler waits.
RESPONSE_QUEUE_LIMIT = 1 << 18
# After a server-side end (deadline, grace) whose trailers had to queue behind DATA
# the client is not taking, how long to wait for them to go out before resetting.
TRAILERS_FLUSH_TIMEOUT = 1.0

_CONTENT_TYPE = "application/grpc"


class CallSettings(Protocol):
    """The server-wide settings a call reads."""

    max_receive: int
    max_send: int
    default_encoding: Optional[str]
    observers: Tuple[RpcObserver, ...]


class CallLink(Protocol):
    """What a call needs of its connection (``_connection.Connection`` implements it)."""

    h2: H2Connection
    io: LoopIO
    peer: str
    paused: bool  # the transport's buffer is full: writers wait

    @property
    def settings(self) -> CallSettings: ...

    def mark_dirty(self) -> None: ...
    def call_done(self, call: CallCore) -> None: ...
    def request_ready(self, call: CallCore) -> None: ...
    def stream_blocked(self, call: CallCore, blocked: bool) -> None: ...

    grown_streams: int

    def unread_added(self, length: int) -> None: ...
    def request_taken(self, length: int) -> None: ...
    def reader_waiting(self) -> None: ...
    def credit(self, call: CallCore, length: int) -> None: ...
    def deadline_added(self, due: float) -> None: ...
    def request_ended(self, call: CallCore) -> None: ...
    def message_completed(self, call: CallCore) -> None: ...
    def leads(self, call: CallCore) -> bool: ...
    def credit_ended(self, call: CallCore, unread: int) -> None: ...
    def may_grow(self, call: CallCore) -> bool: ...
    def output_posted(self, length: int) -> None: ...
    def output_taken(self, length: int) -> None: ...
    def output_added(self, length: int) -> None: ...
    def output_over_limit(self) -> bool: ...
    def worker_started(self) -> None: ...
    def hold(self, call: CallCore) -> None: ...
    def await_request(self, call: CallCore) -> None: ...
    def peer_identities(self) -> Optional[List[bytes]]: ...
    def peer_identity_key(self) -> Optional[str]: ...
    def auth_context(self) -> Dict[str, List[bytes]]: ...


class CallCore:
    # Slots: one call object per RPC, with more attributes than CPython shares keys for
    # (30), so as a plain object each one would build and grow a dict of its own.
    __slots__ = (
        "aborted",
        "active",
        "awaiting_request",
        "bytes_taken",
        "callbacks",
        "cancelled_by_client",
        "code",
        "completed",
        "credit_settled",
        "deadline",
        "decoder",
        "deferred_flow",
        "deserializer",
        "details",
        "done",
        "due",
        "engine_pending",
        "final_code",
        "handler",
        "head",
        "headers_sent",
        "held_flow",
        "initial_sent",
        "io",
        "link",
        "lock",
        "messages_in",
        "messages_out",
        "metadata",
        "method",
        "on_terminated",
        "posted_bytes",
        "queued_bytes",
        "reader_parked",
        "reader_wake",
        "reading",
        "request_compressed",
        "request_ended",
        "requests",
        "response_encoding",
        "rpc_type",
        "serializer",
        "settings",
        "skip_next_compression",
        "started_at",
        "stream_id",
        "to_loop",
        "trailing_metadata",
        "waiters",
        "waker",
        "window_grown",
        "window_size",
        "writer_waiting",
    )

    def __init__(self, link: CallLink, stream_id: int, head: RequestHead, request_ended: bool) -> None:
        self.link = link
        self.io = link.io
        self.settings = link.settings
        self.to_loop: Callable[..., None] = link.io.post
        self.stream_id = stream_id
        self.method = head.method
        self.metadata = head.metadata
        self.head = head
        self.started_at = time.monotonic()
        self.deadline = None if head.timeout is None else self.started_at + head.timeout
        self.due: Optional[float] = None  # the deadline in loop time (its connection's timer)
        # An RLock though nothing re-enters it: a Condition over one waits and notifies
        # through the lock's own C methods, where over a Lock it calls Python helpers.
        self.lock = RLock()
        # A thread waiting for news (the sync adapter's writer) waits on this condition
        # over ``lock``, made by the first that waits: most calls never need one.
        self.waiters: Optional[threading.Condition] = None
        # The sync adapter's reader waiting for a message parks on ``reader_wake``, a
        # Lock kept acquired, which whoever brings news under ``lock`` (a message, the
        # end of the stream or of the call) releases once: a Condition's wait and
        # notify ran Python code and made a lock per message (about 4% of a sync bidi
        # message's instructions).
        self.reader_wake: Optional[threading.Lock] = None
        self.reader_parked = False
        # shared, under lock
        self.active = True
        self.requests: Deque[Tuple[bool, bytes]] = collections.deque()
        self.request_ended = request_ended
        self.queued_bytes = 0
        self.deferred_flow = 0  # received bytes not acknowledged yet (backpressure)
        self.posted_bytes = 0  # written by the handler, not yet given to HTTP/2
        self.engine_pending = 0  # given to HTTP/2, waiting for send window
        self.writer_waiting = False
        self.reading = False  # the handler waits for a message (the connection's credit)
        self.callbacks: Optional[List[Callable[[], None]]] = []
        # loop side
        self.waker: Optional[Callable[[], None]] = None  # a task adapter waiting for news
        self.on_terminated: Optional[Callable[[], None]] = None  # the adapter's own end hook
        self.awaiting_request = False  # dispatch waits for the request message
        self.held_flow = 0  # stream credit the connection's bound holds back (loop only)
        self.credit_settled = False  # ended: its bytes no longer count (under lock)
        self.handler: Optional[Any] = None  # found on the loop when no user code is needed
        self.rpc_type: Optional[str] = None  # set once a handler is found (observers are told)
        self.final_code = StatusCode.CANCELLED  # what the RPC ended with, as far as the wire goes
        self.cancelled_by_client = False
        self.messages_in = 0
        self.bytes_taken = 0  # request bytes the handler has taken (under lock)
        self.window_grown = False  # it holds one of the connection's MAX_GROWN_STREAMS
        self.window_size = link.h2.initial_receive_window  # the stream's receive window
        self.messages_out = 0
        self.done = False
        self.completed = False  # ended with the handler's own status
        self.headers_sent = False
        self.decoder = MessageDecoder(link.settings.max_receive)
        # handler side
        self.code: Optional[StatusCode] = None
        self.details: Optional[str] = None
        self.trailing_metadata: Tuple[Tuple[str, Any], ...] = ()
        self.aborted = False
        self.initial_sent = False
        self.skip_next_compression = False
        self.response_encoding: Optional[str] = None
        self.request_compressed = False  # the last request message read arrived compressed
        self.serializer: Optional[Callable[[Any], bytes]] = None
        self.deserializer: Optional[Callable[[bytes], Any]] = None
        self.set_response_encoding(link.settings.default_encoding)

    # ======================================================================
    # loop side
    # ======================================================================
    def start_deadline(self) -> None:
        """Hand the client's deadline (``grpc-timeout``), if it set one, to the
        connection, whose one timer serves all its calls' deadlines: a timer of its own
        per call cost a unary call about 5% of its instructions, and most calls end
        long before their deadline."""
        if self.head.timeout is not None:
            self.due = self.io.loop.time() + self.head.timeout
            self.link.deadline_added(self.due)

    def handler_known(self, handler: Any) -> None:
        """The handler was found on the loop (no user code needed). A unary request is
        dispatched only once its message is here: a client that opens streams and sends
        nothing holds no worker (the connection waits for ``request_ready``)."""
        self.handler = handler
        if self.settings.observers:
            self.handler_found_loop(handler)
        if not handler.request_streaming and not self.request_ended:
            self.awaiting_request = True

    def request_here(self) -> bool:
        """Whether a unary handler could read its request now (or learn it is missing)."""
        with self.lock:
            return bool(self.requests) or self.request_ended

    def on_data(self, data: Union[bytes, List[memoryview]], flow_length: int, end_stream: bool) -> None:
        """DATA arrived (loop): ``data`` is the payload, or its pieces as views of the
        bytes read (the engine's ``DataReceived.pieces``)."""
        link = self.link
        h2 = link.h2
        # The connection window reopens as bytes arrive, whatever this call does with
        # them: a call whose handler is slow or not started yet holds back only its own
        # stream's credit, never the other calls' (see _connection.CREDIT_LIMIT).
        h2.acknowledge_connection_data(flow_length)
        if self.done:
            h2.acknowledge_stream_data(self.stream_id, flow_length)
            return
        decoder = self.decoder
        before = decoder.buffered
        try:
            if isinstance(data, list):
                messages = decoder.feed_pieces(data)
            else:
                messages = decoder.feed(data) if data else []
        except ProtocolViolation as exc:
            if decoder.buffered != before:
                link.unread_added(decoder.buffered - before)
            self.abort_loop(exc.code, exc.message)
            return
        held = decoder.buffered  # of a message not ended yet: 0 unless one is partial
        received = held - before
        if messages:
            self.messages_in += len(messages)
        with self.lock:
            for message in messages:
                self.requests.append(message)
                size = len(message[1])
                self.queued_bytes += size
                received += size
            if end_stream:
                self.request_ended = True
            # The first message queued is always credited (max_receive bounds it): a
            # message just over the limit would otherwise wait for the handler's
            # thread to be credited, a round trip per message (1 MiB unary calls).
            withhold = self.queued_bytes > REQUEST_QUEUE_LIMIT and len(self.requests) > 1
            if withhold:
                self.deferred_flow += flow_length
            news = bool(messages) or end_stream
            if news and self.reader_parked:
                # Only a whole message or the end is news to a reader: a large message
                # arrives in many DATA frames, and waking the handler for each one cost
                # a thread switch per 16 KiB.
                self._wake_reader()
        if received:
            link.unread_added(received)
        if end_stream:
            if self.held_flow or link.leads(self):  # else request_ended has nothing to undo
                link.request_ended(self)
        elif not withhold:
            if self.window_size < STREAM_WINDOW_GROWN and (
                held or (messages and self.bytes_taken >= GROW_WINDOW_AFTER)
            ):
                self._grow_window(bool(messages))  # (tested first: usually it has nothing to do)
            link.credit(self, flow_length)
        if messages and not end_stream and link.leads(self):
            # (At the end, request_ended has let go of the call if it led.)
            link.message_completed(self)
        if end_stream and held:
            self.abort_loop(StatusCode.INTERNAL, "request ended inside a message")
            return
        if news and self.waker is not None:
            self.waker()
        if self.awaiting_request and news:
            self.awaiting_request = False
            link.request_ready(self)

    def _grow_window(self, completed: bool) -> None:
        """Grow the stream's receive window for a message larger than it (to fit it: one
        WINDOW_UPDATE, not one per half window, each a round trip the sender may wait
        for), or once the handler has kept up with GROW_WINDOW_AFTER bytes; within the
        connection's MAX_GROWN_STREAMS (a grown window is credit given in advance)."""
        decoder = self.decoder
        if completed and self.bytes_taken >= GROW_WINDOW_AFTER:
            size = STREAM_WINDOW_GROWN
        elif decoder.partial:
            size = min(decoder.buffered + decoder.missing, STREAM_WINDOW_GROWN)
        else:
            return
        if size <= self.window_size:
            return
        link = self.link
        if not self.window_grown:
            if not link.may_grow(self):
                return
            self.window_grown = True
            link.grown_streams += 1
        self.window_size = size
        link.h2.grow_receive_window(self.stream_id, size)

    def on_end(self) -> None:
        """The client half-closed (END_STREAM without data, or trailers)."""
        self.on_data(b"", 0, True)

    def on_reset(self) -> None:
        """The client reset the stream: the RPC is cancelled."""
        if not self.done:
            self.cancelled_by_client = True
            self.done = True
            self._terminate()

    def expire(self) -> None:
        self.abort_loop(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def abort_loop(self, code: StatusCode, details: str) -> None:
        """End the RPC from the server side with a status; the handler goes inactive."""
        if self.done:
            return
        self.final_code = code
        h2 = self.link.h2
        sid = self.stream_id
        if self.headers_sent:
            # Queued behind any DATA still waiting for window: the status goes out
            # as soon as the client takes that data (checked by _settle_stream).
            h2.send_headers(sid, trailers_block(code.value[0], details), end_stream=True)
        else:
            block = trailers_only_block(200, _CONTENT_TYPE, code.value[0], details)
            h2.send_headers(sid, block, end_stream=True)
        if h2.pending_bytes(sid):
            self.io.loop.call_later(TRAILERS_FLUSH_TIMEOUT, self._settle_stream, h2)
        elif not self.request_ended:
            # RFC 9113 8.1: the response is complete; the client may stop sending.
            h2.reset_stream(sid, ErrorCode.NO_ERROR)
        self._end_loop()

    def handler_found_loop(self, handler: Any) -> None:
        """The handler is known: observers count the RPC as started."""
        if self.done or self.rpc_type is not None:
            return
        kind = grpc_type(bool(handler.request_streaming), bool(handler.response_streaming))
        self.rpc_type = kind
        for observer in self.settings.observers:
            observer.rpc_started(self.method, kind)

    def _settle_stream(self, h2: Any) -> None:
        """Some time after a server-side end: trailers still stuck behind unread
        DATA are given up (RST_STREAM CANCEL); a request still open is told to stop
        (RST_STREAM NO_ERROR, RFC 9113 8.1)."""
        if not h2.stream_is_open(self.stream_id):
            return
        if h2.pending_bytes(self.stream_id):
            h2.reset_stream(self.stream_id, ErrorCode.CANCEL)
        elif h2.stream_remote_open(self.stream_id):
            h2.reset_stream(self.stream_id, ErrorCode.NO_ERROR)
        self.link.mark_dirty()

    def send_loop(self, headers: Optional[bytes], message: Framed) -> None:
        """Loop: a response message from ``post_framed`` (a handler thread), to HTTP/2."""
        if self.done:
            return
        size = framed_size(message)
        self._to_engine(headers, message, size, size)
        self.link.output_taken(size)

    def send_now(self, message: Framed, size: int) -> None:
        """Loop: a response message of ``size`` bytes from a handler that runs on the
        loop (``puregrpc.aio``), straight to HTTP/2: ``post_framed`` and ``send_loop``
        in one, with nothing counted as on its way in between."""
        if self.done:
            return
        self._to_engine(None if self.initial_sent else self.take_headers(), message, size, 0)
        self.link.output_added(size)

    def _to_engine(self, headers: Optional[bytes], message: Framed, size: int, posted: int) -> None:
        link = self.link
        h2 = link.h2
        sid = self.stream_id
        if headers is not None:
            h2.send_headers(sid, headers)
            self.headers_sent = True
        pending = _send_framed(h2, sid, message)
        self.messages_out += 1
        if pending:
            link.stream_blocked(self, True)
        with self.lock:
            self.posted_bytes -= posted
            self.engine_pending = pending
            if self.writer_waiting and self.waiters is not None:
                self.waiters.notify_all()
        link.mark_dirty()

    def window_opened_loop(self) -> None:
        """More send window: recount what is still unsent; wake a waiting writer."""
        pending = 0 if self.done else self.link.h2.pending_bytes(self.stream_id)
        if not pending:
            self.link.stream_blocked(self, False)
        with self.lock:
            self.engine_pending = pending
            if self.writer_waiting and self.waiters is not None:
                self.waiters.notify_all()
        if self.waker is not None:
            self.waker()

    def headers_loop(self, headers: bytes) -> None:
        if not self.done:
            self.link.h2.send_headers(self.stream_id, headers)
            self.headers_sent = True
            self.link.mark_dirty()

    def finish_loop(
        self, headers: Optional[bytes], message: Optional[Framed], trailers: bytes, code: StatusCode
    ) -> None:
        if message is not None:
            self.link.output_taken(framed_size(message))
        if self.done:
            return
        self.final_code = code
        h2 = self.link.h2
        sid = self.stream_id
        if headers is not None:
            h2.send_headers(sid, headers)
            self.headers_sent = True
        if message is not None:
            _send_framed(h2, sid, message)
            self.messages_out += 1
        h2.send_headers(sid, trailers, end_stream=True)
        if not self.request_ended and not h2.pending_bytes(sid):
            # RFC 9113 8.1: a complete response may be followed by RST_STREAM
            # NO_ERROR so the client stops sending a request we no longer read.
            h2.reset_stream(sid, ErrorCode.NO_ERROR)
        self.completed = True
        self._end_loop()

    def cancel_loop(self) -> None:
        if not self.done:
            self.link.h2.reset_stream(self.stream_id, ErrorCode.CANCEL)
            self._end_loop()

    def release_flow_loop(self, length: int) -> None:
        """The handler read its queue down: the stream credit it held back goes (the
        connection's was given on arrival), as the connection's bound allows."""
        if not self.done and not self.request_ended:
            self.link.credit(self, length)
            self.link.mark_dirty()

    def _end_loop(self) -> None:
        self.done = True
        self.link.mark_dirty()
        self._terminate()

    def _terminate(self) -> None:
        with self.lock:
            self.active = False
            callbacks, self.callbacks = self.callbacks, None
            # The stream credit held back for backpressure is moot now (the connection's
            # was given on arrival); the bytes still queued stop counting against the
            # connection's bound, once (credit_settled: a late pop_request skips it).
            self.deferred_flow = 0
            buffered = self.decoder.buffered
            unread = 0 if self.credit_settled else self.queued_bytes + buffered
            self.credit_settled = True
            if self.reader_parked:
                self._wake_reader()
            if self.waiters is not None:
                self.waiters.notify_all()
        link = self.link
        if buffered:
            self.decoder.clear()
        if self.window_grown:
            self.window_grown = False
            link.grown_streams -= 1
        link.credit_ended(self, unread)
        link.call_done(self)
        if _ACCESS.isEnabledFor(logging.INFO):
            _ACCESS.info(
                "%s %s %s %.1fms in=%d out=%d",
                link.peer,
                self.method,
                self.final_code.name,
                (time.monotonic() - self.started_at) * 1000.0,
                self.messages_in,
                self.messages_out,
            )
        if self.rpc_type is not None:
            observers = self.settings.observers
            if observers:
                record = RpcRecord(
                    self.method,
                    self.rpc_type,
                    self.final_code,
                    time.monotonic() - self.started_at,
                    self.messages_in,
                    self.messages_out,
                )
                for observer in observers:
                    observer.rpc_finished(record)
        if callbacks:
            run_callbacks(callbacks)
        if self.waker is not None:
            self.waker()
        # Dropped once called: it is a bound method of the adapter, which holds this call.
        on_terminated, self.on_terminated = self.on_terminated, None
        if on_terminated is not None:
            on_terminated()

    # ======================================================================
    # handler side (never blocks: the adapters wait)
    # ======================================================================
    def park_reader(self) -> threading.Lock:
        """Under ``lock``, with no message queued and the stream and call open: the
        reading thread is to block on the returned lock (outside ``lock``) until news."""
        wake = self.reader_wake
        if wake is None:
            wake = self.reader_wake = threading.Lock()
            wake.acquire()
        self.reading = True
        self.reader_parked = True
        return wake

    def _wake_reader(self) -> None:
        """Under ``lock``: news for the parked reader (released once per park)."""
        self.reader_parked = False
        self.reader_wake.release()  # type: ignore[union-attr]

    def condition(self) -> threading.Condition:
        """The condition a thread waits on for news of this call (over ``lock``)."""
        with self.lock:
            if self.waiters is None:
                self.waiters = threading.Condition(self.lock)
            return self.waiters

    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self.lock:
            if self.callbacks is None:
                return False
            self.callbacks.append(callback)
            return True

    def set_response_encoding(self, encoding: Optional[str]) -> None:
        if encoding is not None and encoding != "identity" and encoding in self.head.accept_encoding:
            self.response_encoding = encoding
        else:
            self.response_encoding = None

    def cancel_from_handler(self) -> None:
        with self.lock:
            was_active, self.active = self.active, False
            if self.reader_parked:
                self._wake_reader()
            if self.waiters is not None:
                self.waiters.notify_all()
        if was_active:
            self.to_loop(self.cancel_loop)

    def take_headers(self) -> Optional[bytes]:
        if self.initial_sent:
            return None
        self.initial_sent = True
        return response_headers_block(_CONTENT_TYPE, self.response_encoding)

    def send_initial_metadata(self, metadata: Sequence[Tuple[str, Any]]) -> None:
        if self.initial_sent:
            raise ValueError("initial metadata has already been sent for this RPC")
        fields = encode_metadata(metadata)
        self.initial_sent = True
        block = response_headers_block(_CONTENT_TYPE, self.response_encoding, fields)
        self.to_loop(self.headers_loop, block)

    def frame(self, response: Any) -> Framed:
        """Serialize, check the size limit, compress and frame one response message."""
        try:
            data = self.serializer(response) if self.serializer is not None else response
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"serializer returned {type(data).__name__}, not bytes")
        except Exception:
            _LOGGER.exception("Failed to serialize response for %s", self.method)
            raise Stop(StatusCode.INTERNAL, "Failed to serialize response!") from None
        limit = self.settings.max_send
        if len(data) > limit:
            raise Stop(StatusCode.RESOURCE_EXHAUSTED, f"Sent message larger than max ({len(data)} vs. {limit})")
        if self.response_encoding is not None and not self.skip_next_compression:
            return frame_for_wire(compress(bytes(data), self.response_encoding), True)
        self.skip_next_compression = False
        return frame_for_wire(bytes(data))

    def write_blocked(self) -> bool:
        """Under ``lock``: too much is queued unsent for another message now."""
        return self.posted_bytes + self.engine_pending >= RESPONSE_QUEUE_LIMIT or self.link.paused

    def post_framed(self, framed: Framed) -> None:
        """Hand a framed message to the loop (after ``write_blocked`` said there is room)."""
        size = framed_size(framed)
        with self.lock:
            self.posted_bytes += size
        self.link.output_posted(size)
        self.to_loop(self.send_loop, self.take_headers(), framed)

    def finish(self, framed: Optional[Framed], code: StatusCode, details: Optional[str]) -> None:
        """Send the status (and a last message): the handler's last word."""
        # grpc-status-details-bin (google.rpc.Status) is set as trailing metadata,
        # e.g. by grpcio-status: it goes out as the status field, not as metadata.
        status_details: Optional[bytes] = None
        user_trailing: List[Tuple[str, Any]] = []
        for item in self.trailing_metadata:
            if item[0] == "grpc-status-details-bin":
                value = item[1]
                status_details = value.encode() if isinstance(value, str) else bytes(value)
            else:
                user_trailing.append(item)
        try:
            trailing = encode_metadata(user_trailing)
        except ValueError as exc:
            code, details, trailing = StatusCode.INTERNAL, f"invalid trailing metadata: {exc}", []
            status_details = None
        number = code._value_[0]  # not .value: a Python-level property call
        if framed is not None:
            self.link.output_posted(framed_size(framed))
        if framed is None and not self.initial_sent:
            block = trailers_only_block(200, _CONTENT_TYPE, number, details, trailing, status_details)
            self.initial_sent = True
            self.to_loop(self.finish_loop, None, None, block, code)
            return
        headers = self.take_headers()
        block = trailers_block(number, details, trailing, status_details)
        self.to_loop(self.finish_loop, headers, framed, block, code)

    def pop_request(self) -> Tuple[bool, bytes]:
        """Under ``lock``, with ``requests`` not empty: the next message; the flow
        withheld for backpressure goes back (via the loop) once half has been read."""
        compressed, payload = self.requests.popleft()
        self.queued_bytes -= len(payload)
        self.bytes_taken += len(payload)
        if not self.credit_settled:
            self.link.request_taken(len(payload))
        if self.deferred_flow and self.queued_bytes <= REQUEST_QUEUE_LIMIT // 2:
            release, self.deferred_flow = self.deferred_flow, 0
            self.to_loop(self.release_flow_loop, release)
        return compressed, payload

    def decode(self, compressed: bool, payload: bytes) -> Any:
        self.request_compressed = compressed
        if compressed:
            encoding = self.head.encoding
            if encoding is None:
                raise Stop(StatusCode.INTERNAL, "compressed message received without grpc-encoding")
            limit = self.settings.max_receive
            try:
                payload = decompress(payload, encoding, limit)
            except MessageTooLarge:
                raise Stop(
                    StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max (more than {limit})"
                ) from None
            except DecompressionError as exc:
                raise Stop(StatusCode.INTERNAL, str(exc)) from None
        if self.deserializer is None:
            return payload
        try:
            return self.deserializer(payload)
        except Exception:
            _LOGGER.exception("Failed to deserialize request for %s", self.method)
            raise Stop(StatusCode.INTERNAL, "Exception deserializing request!") from None

    def handler_stopped(self, exc: Exception, aio: bool) -> Stop:
        """How a handler that raised ``exc`` ends its RPC, for both adapters: a ``Stop``
        with a status as is; nothing once the RPC has ended; the status set on the
        context after an abort (or an ``AbortError``/``RpcError``); else the handler's
        error, in grpcio's words (``aio``: grpc.aio's)."""
        if isinstance(exc, Stop) and exc.code is not None and not self.aborted:
            return exc
        if not self.active:
            return Stop(None)
        code = self.code if self.code is not None else StatusCode.UNKNOWN
        if self.aborted or isinstance(exc, (Stop, AbortError, RpcError)):
            return Stop(code, self.details or "")
        cause = exc.__cause__ if isinstance(exc, IterationError) and exc.__cause__ is not None else exc
        if aio:
            _LOGGER.error("Exception in RPC handler %s", self.method, exc_info=cause)
            default = f"Unexpected {type(cause)}: {cause}"
        else:
            what = "iterating responses" if isinstance(exc, IterationError) else "calling application"
            _LOGGER.error("Exception %s: %s", what, self.method, exc_info=cause)
            default = f"Exception {what}: {cause}"
        code = self.code if self.code is not None and self.code is not StatusCode.OK else StatusCode.UNKNOWN
        return Stop(code, self.details if self.details is not None else default)

    def unary_request_missing(self) -> Stop:
        """The error for a unary method whose client sent no message (grpcio's words)."""
        return Stop(StatusCode.UNIMPLEMENTED, f'"{self.method}" requires exactly one request message.')


def _send_framed(h2: H2Connection, stream_id: int, message: Framed) -> int:
    """Queue one framed message's DATA; returns the stream's bytes waiting for window."""
    if type(message) is tuple:
        h2.send_data(stream_id, message[0])
        return h2.send_data(stream_id, message[1])
    return h2.send_data(stream_id, message)  # type: ignore[arg-type]


__all__ = ["CallCore", "CallLink", "CallSettings"]
