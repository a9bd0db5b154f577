"""One RPC on the server: the bridge between the I/O thread and a handler thread.

A ``ServerCall`` has two sides. Methods named ``on_*`` and ``*_loop`` run on the
I/O thread only; they own the wire (``done``, the HTTP/2 stream). The others run
on the handler's thread and talk to the loop through ``IOThread.post``. State
shared by both (the request queue, ``active``, the write budget) is guarded by
``cond``. Backpressure both ways: the loop stops acknowledging request data
(no WINDOW_UPDATE) while too much is queued unread, and a handler writing
responses blocks while too much is queued unsent.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Deque, Iterator, List, Optional, Sequence, Tuple

from ._compression import DecompressionError, MessageTooLarge, compress, decompress
from ._context import AbortError, RpcError, ServicerContext
from ._h2.errors import ErrorCode
from ._handlers import HandlerCallDetails, intercepted_lookup
from ._protocol import (
    MessageDecoder,
    ProtocolViolation,
    RequestHead,
    encode_metadata,
    frame_message,
    response_headers_block,
    trailers_block,
    trailers_only_block,
)
from ._stats import RpcRecord, grpc_type
from ._status import StatusCode

if TYPE_CHECKING:
    from ._connection import Connection

_LOGGER = logging.getLogger("puregrpc")
# One INFO line per finished RPC when enabled (``puregrpc serve --access-log``, or this
# logger's level set to INFO): peer, method, status, duration, messages in and out. Its
# own level is WARNING, so a root logger at INFO does not turn it on; off, it costs one
# cached level check per RPC.
_ACCESS = logging.getLogger("puregrpc.access")
_ACCESS.setLevel(logging.WARNING)

# Request bytes queued unread before the loop withholds WINDOW_UPDATE.
REQUEST_QUEUE_LIMIT = 1 << 20
# Response bytes queued unsent before a writing handler blocks.
RESPONSE_QUEUE_LIMIT = 1 << 18
# After a server-side end (deadline, grace) whose trailers had to queue behind DATA
# the client is not taking, how long to wait for them to go out before resetting.
TRAILERS_FLUSH_TIMEOUT = 1.0

_CONTENT_TYPE = "application/grpc"


class _Stop(Exception):
    """Ends a handler run with a status (or silently, if ``code`` is None)."""

    def __init__(self, code: Optional[StatusCode], details: str = "") -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _IterationError(Exception):
    """Wraps an exception raised by a handler's response iterator."""


class ServerCall:
    def __init__(self, conn: Connection, stream_id: int, head: RequestHead, request_ended: bool) -> None:
        self.conn = conn
        self.io = conn.io
        self.stream_id = stream_id
        self.method = head.method
        self.metadata = head.metadata
        self.head = head
        self.started_at = time.monotonic()
        self.deadline = None if head.timeout is None else self.started_at + head.timeout
        self.timer: Optional[Any] = None
        self.cond = threading.Condition(threading.Lock())
        # shared, under cond
        self.active = True
        self.requests: Deque[Tuple[bool, bytes]] = collections.deque()
        self.request_ended = request_ended
        self.queued_bytes = 0
        self.deferred_flow = 0  # received bytes not acknowledged yet (backpressure)
        self.posted_bytes = 0  # written by the handler, not yet given to HTTP/2
        self.engine_pending = 0  # given to HTTP/2, waiting for send window
        self.writer_waiting = False
        self.callbacks: Optional[List[Callable[[], None]]] = []
        # loop side
        self.partial_flow = 0  # flow bytes withheld for an unfinished message (connection bound)
        self.handler: Optional[Any] = None  # found on the loop when no user code is needed
        self.rpc_type: Optional[str] = None  # set once a handler is found (observers are told)
        self.final_code = StatusCode.CANCELLED  # what the RPC ended with, as far as the wire goes
        self.cancelled_by_client = False
        self.messages_in = 0
        self.messages_out = 0
        self.done = False
        self.completed = False  # ended with the handler's own status
        self.headers_sent = False
        self.decoder = MessageDecoder(conn.core.max_receive)
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
        self.set_response_encoding(conn.core.default_encoding)

    # ======================================================================
    # I/O thread side
    # ======================================================================
    def on_data(self, data: bytes, flow_length: int, end_stream: bool) -> None:
        conn = self.conn
        h2 = conn.h2
        if self.done:
            h2.acknowledge_received_data(self.stream_id, flow_length)
            return
        decoder = self.decoder
        before = decoder.buffered
        try:
            messages = decoder.feed(data) if data else []
        except ProtocolViolation as exc:
            if decoder.buffered != before:
                conn.partial_changed(self, decoder.buffered - before)
            h2.acknowledge_received_data(self.stream_id, flow_length)
            self.abort_loop(exc.code, exc.message)
            return
        after = decoder.buffered
        if after != before:
            conn.partial_changed(self, after - before)
        hold_partial = after > 0 and conn.partial_over_limit(self)
        if messages:
            self.messages_in += len(messages)
        with self.cond:
            for message in messages:
                self.requests.append(message)
                self.queued_bytes += len(message[1])
            if end_stream:
                self.request_ended = True
            withhold = self.queued_bytes > REQUEST_QUEUE_LIMIT
            if withhold:
                self.deferred_flow += flow_length
            self.cond.notify_all()
        if hold_partial and not withhold:
            conn.withhold_partial(self, flow_length)
        elif not withhold:
            h2.acknowledge_received_data(self.stream_id, flow_length)
            if after:
                conn.favour_leader()
        if end_stream and decoder.partial:
            self.abort_loop(StatusCode.INTERNAL, "request ended inside a message")

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
        self.timer = None
        self.abort_loop(StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def abort_loop(self, code: StatusCode, details: str) -> None:
        """End the RPC from the server side with a status; the handler goes inactive."""
        if self.done:
            return
        self.final_code = code
        h2 = self.conn.h2
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
        for observer in self.conn.core.observers:
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
        self.conn.mark_dirty()

    def send_loop(self, headers: Optional[bytes], message: bytes) -> None:
        if self.done:
            return
        h2 = self.conn.h2
        if headers is not None:
            h2.send_headers(self.stream_id, headers)
            self.headers_sent = True
        h2.send_data(self.stream_id, message)
        self.messages_out += 1
        pending = h2.pending_bytes(self.stream_id)
        if pending:
            self.conn.blocked.add(self)
        with self.cond:
            self.posted_bytes -= len(message)
            self.engine_pending = pending
            if self.writer_waiting:
                self.cond.notify_all()
        self.conn.output_taken(len(message))
        self.conn.mark_dirty()

    def window_opened_loop(self) -> None:
        """More send window: recount what is still unsent; wake a blocked writer."""
        pending = 0 if self.done else self.conn.h2.pending_bytes(self.stream_id)
        if not pending:
            self.conn.blocked.discard(self)
        with self.cond:
            self.engine_pending = pending
            if self.writer_waiting:
                self.cond.notify_all()

    def headers_loop(self, headers: bytes) -> None:
        if not self.done:
            self.conn.h2.send_headers(self.stream_id, headers)
            self.headers_sent = True
            self.conn.mark_dirty()

    def finish_loop(
        self, headers: Optional[bytes], message: Optional[bytes], trailers: bytes, code: StatusCode
    ) -> None:
        if message is not None:
            self.conn.output_taken(len(message))
        if self.done:
            return
        self.final_code = code
        h2 = self.conn.h2
        sid = self.stream_id
        if headers is not None:
            h2.send_headers(sid, headers)
            self.headers_sent = True
        if message is not None:
            h2.send_data(sid, message)
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
            self.conn.h2.reset_stream(self.stream_id, ErrorCode.CANCEL)
            self._end_loop()

    def release_flow_loop(self, length: int) -> None:
        self.conn.h2.acknowledge_received_data(self.stream_id, length)
        self.conn.mark_dirty()

    def _end_loop(self) -> None:
        self.done = True
        self.conn.mark_dirty()
        self._terminate()

    def _terminate(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        with self.cond:
            self.active = False
            callbacks, self.callbacks = self.callbacks, None
            # Whatever ended the call, every byte received is credited back to the
            # connection exactly once: what was withheld for backpressure goes now
            # (a late release_flow_loop finds 0 here).
            deferred, self.deferred_flow = self.deferred_flow, 0
            self.cond.notify_all()
        h2 = self.conn.h2
        if deferred:
            h2.acknowledge_received_data(self.stream_id, deferred)
        if self.decoder.buffered:
            self.conn.partial_changed(self, -self.decoder.buffered)
            self.decoder.clear()
        self.conn.release_partial(self)
        self.conn.call_done(self)
        if _ACCESS.isEnabledFor(logging.INFO):
            _ACCESS.info(
                "%s %s %s %.1fms in=%d out=%d",
                self.conn.peer,
                self.method,
                self.final_code.name,
                (time.monotonic() - self.started_at) * 1000.0,
                self.messages_in,
                self.messages_out,
            )
        if self.rpc_type is not None:
            observers = self.conn.core.observers
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

    # ======================================================================
    # handler thread side
    # ======================================================================
    def add_callback(self, callback: Callable[[], None]) -> bool:
        with self.cond:
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
        with self.cond:
            was_active, self.active = self.active, False
            self.cond.notify_all()
        if was_active:
            self.io.post(self.cancel_loop)

    def _take_headers(self) -> Optional[bytes]:
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
        self.io.post(self.headers_loop, block)

    def _frame(self, response: Any) -> bytes:
        try:
            data = self.serializer(response) if self.serializer is not None else response
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f"serializer returned {type(data).__name__}, not bytes")
        except Exception:
            _LOGGER.exception("Failed to serialize response for %s", self.method)
            raise _Stop(StatusCode.INTERNAL, "Failed to serialize response!") from None
        limit = self.conn.core.max_send
        if len(data) > limit:
            raise _Stop(StatusCode.RESOURCE_EXHAUSTED, f"Sent message larger than max ({len(data)} vs. {limit})")
        if self.response_encoding is not None and not self.skip_next_compression:
            return frame_message(compress(bytes(data), self.response_encoding), True)
        self.skip_next_compression = False
        return frame_message(bytes(data))

    def write(self, response: Any) -> bool:
        """Send one response message; blocks while the client is not reading."""
        framed = self._frame(response)
        with self.cond:
            while self.active and (self.posted_bytes + self.engine_pending >= RESPONSE_QUEUE_LIMIT or self.conn.paused):
                self.writer_waiting = True
                self.cond.wait(1.0)
            self.writer_waiting = False
            if not self.active:
                return False
            self.posted_bytes += len(framed)
        self.conn.output_posted(len(framed))
        self.io.post(self.send_loop, self._take_headers(), framed)
        return True

    def finish(self, framed: Optional[bytes], code: StatusCode, details: Optional[str]) -> None:
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
        number = code.value[0]
        if framed is not None:
            self.conn.output_posted(len(framed))
        if framed is None and not self.initial_sent:
            block = trailers_only_block(200, _CONTENT_TYPE, number, details, trailing, status_details)
            self.initial_sent = True
            self.io.post(self.finish_loop, None, None, block, code)
            return
        headers = self._take_headers()
        block = trailers_block(number, details, trailing, status_details)
        self.io.post(self.finish_loop, headers, framed, block, code)

    def next_request(self) -> Optional[Any]:
        """The next request message, None at the end; raises RpcError if cancelled."""
        with self.cond:
            while not self.requests and not self.request_ended and self.active:
                self.cond.wait()
            if not self.requests:
                if not self.active:
                    raise RpcError("the RPC was cancelled or has ended")
                return None
            compressed, payload = self.requests.popleft()
            self.queued_bytes -= len(payload)
            release = 0
            if self.deferred_flow and self.queued_bytes <= REQUEST_QUEUE_LIMIT // 2:
                release, self.deferred_flow = self.deferred_flow, 0
        if release:
            self.io.post(self.release_flow_loop, release)
        return self._decode(compressed, payload)

    def _decode(self, compressed: bool, payload: bytes) -> Any:
        self.request_compressed = compressed
        if compressed:
            encoding = self.head.encoding
            if encoding is None:
                raise _Stop(StatusCode.INTERNAL, "compressed message received without grpc-encoding")
            limit = self.conn.core.max_receive
            try:
                payload = decompress(payload, encoding, limit)
            except MessageTooLarge:
                raise _Stop(
                    StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max (more than {limit})"
                ) from None
            except DecompressionError as exc:
                raise _Stop(StatusCode.INTERNAL, str(exc)) from None
        if self.deserializer is None:
            return payload
        try:
            return self.deserializer(payload)
        except Exception:
            _LOGGER.exception("Failed to deserialize request for %s", self.method)
            raise _Stop(StatusCode.INTERNAL, "Exception deserializing request!") from None

    def run(self) -> None:
        """The whole RPC on a handler thread: lookup, handler, status."""
        if not self.active:
            return  # cancelled while it waited for a thread
        conn = self.conn
        if conn.output_over_limit():
            # The client is not taking what this connection already answered:
            # wait (on the loop, holding no thread) until its output drains.
            self.io.post(conn.hold, self)
            return
        try:
            self._run()
        except _Stop as stop:
            if stop.code is not None:
                self.finish(None, stop.code, stop.details)
        except BaseException:
            _LOGGER.exception("puregrpc internal error serving %s", self.method)
            self.finish(None, StatusCode.INTERNAL, "internal server error")
            raise

    def _run(self) -> None:
        core = self.conn.core
        try:
            handler = self.handler
            if handler is None:
                handler = intercepted_lookup(
                    core.registry, core.interceptors, HandlerCallDetails(self.method, self.metadata)
                )
        except Exception as exc:
            _LOGGER.exception("Exception servicing handler for %s: %s", self.method, exc)
            raise _Stop(StatusCode.UNKNOWN, "Error in service handler!") from None
        if handler is None:
            raise _Stop(StatusCode.UNIMPLEMENTED, "Method not found!")
        if self.handler is None and core.observers:
            self.io.post(self.handler_found_loop, handler)
        self.serializer = handler.response_serializer
        self.deserializer = handler.request_deserializer
        context = ServicerContext(self)
        if handler.request_streaming:
            request: Any = RequestIterator(self)
            behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary
        else:
            request = self._read_unary()
            behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
        try:
            result = behavior(request, context)
            if handler.response_streaming:
                try:
                    self._stream_responses(result)
                except (_Stop, AbortError, RpcError):
                    raise
                except Exception as exc:
                    raise _IterationError(exc) from exc
                framed = None
            elif self.code is None or self.code is StatusCode.OK:
                framed = self._frame(result)
            else:
                framed = None
        except (_Stop, AbortError, RpcError) as exc:
            if isinstance(exc, _Stop) and exc.code is not None and not self.aborted:
                raise
            if not self.active:
                raise _Stop(None) from None
            code = self.code if self.code is not None else StatusCode.UNKNOWN
            raise _Stop(code, self.details or "") from None
        except Exception as exc:
            if not self.active:
                raise _Stop(None) from None
            if self.aborted:  # context.abort() raises a bare Exception, as grpcio's does
                raise _Stop(self.code if self.code is not None else StatusCode.UNKNOWN, self.details or "") from None
            # grpcio's wording: which side of the handler raised
            what = "iterating responses" if isinstance(exc, _IterationError) else "calling application"
            cause = exc.__cause__ if isinstance(exc, _IterationError) else exc
            _LOGGER.error("Exception %s: %s", what, self.method, exc_info=cause)
            code = self.code if self.code is not None and self.code is not StatusCode.OK else StatusCode.UNKNOWN
            details = self.details if self.details is not None else f"Exception {what}: {cause}"
            raise _Stop(code, details) from None
        if self.active:
            self.finish(framed, self.code or StatusCode.OK, self.details)

    def _read_unary(self) -> Any:
        with self.cond:
            while not self.requests and not self.request_ended and self.active:
                self.cond.wait()
            if not self.active:
                raise _Stop(None)
            if not self.requests:
                # as grpcio
                message = f'"{self.method}" requires exactly one request message.'
                raise _Stop(StatusCode.UNIMPLEMENTED, message)
            compressed, payload = self.requests.popleft()
            self.queued_bytes -= len(payload)
        return self._decode(compressed, payload)

    def _stream_responses(self, responses: Any) -> None:
        iterator: Iterator[Any] = iter(responses)
        try:
            for response in iterator:
                if not self.write(response):
                    break
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and not self.active:
                close()


class RequestIterator:
    """The request stream of a client-streaming RPC, as a blocking iterator."""

    def __init__(self, call: ServerCall) -> None:
        self._call = call

    def __iter__(self) -> RequestIterator:
        return self

    def __next__(self) -> Any:
        message = self._call.next_request()
        if message is None:
            raise StopIteration
        return message

    def next(self) -> Any:
        return self.__next__()


# --- callbacks --------------------------------------------------------------
# add_callback callbacks are user code: they never run on the I/O thread, and
# not in the user's pool either (a full pool must not delay a cancellation).

_callback_queue: queue.SimpleQueue[List[Callable[[], None]]] = queue.SimpleQueue()
_callback_thread: Optional[threading.Thread] = None
_callback_lock = threading.Lock()


def _callback_worker() -> None:
    while True:
        for callback in _callback_queue.get():
            try:
                callback()
            except Exception:
                _LOGGER.exception("RPC termination callback %r raised", callback)


def run_callbacks(callbacks: List[Callable[[], None]]) -> None:
    global _callback_thread
    if _callback_thread is None:
        with _callback_lock:
            if _callback_thread is None:
                thread = threading.Thread(target=_callback_worker, name="puregrpc-callbacks", daemon=True)
                thread.start()
                _callback_thread = thread
    _callback_queue.put(callbacks)


__all__ = ["RequestIterator", "ServerCall"]
