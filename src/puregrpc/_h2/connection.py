"""The server side of an HTTP/2 connection (RFC 9113), sans-I/O.

Bytes in (``receive_data``), events out; commands in (``send_*``, ``reset_stream``,
``ping``, ``goaway``, ``acknowledge_received_data``), bytes out (``data_to_send``, or
``parts_to_send`` for a writer that sends the parts unjoined).
No sockets, no threads, no clock reads: ``now`` (seconds, monotonic) is passed in.

One connection object belongs to one thread at a time (the I/O loop); it holds no
locks and relies on nothing the GIL would provide.

Conventions the layer above can rely on:

* Header names and values are decoded from bytes with latin-1, which never fails
  and round-trips every byte (``value.encode("latin-1")`` gives the wire bytes back).
* ``StreamReset(remote=False)`` is reported for every stream error the engine
  raises on a stream the peer opened, including a request whose header block failed
  validation (that stream was never reported by ``RequestReceived``: ignore unknown
  ids). Streams refused with REFUSED_STREAM are not reported, nor are errors on
  streams that were already closed.
* Commands (``send_headers``, ``send_data``, ``reset_stream``) on a stream that is no
  longer open (reset, closed, or connection terminated) are ignored: they can race
  with the peer's RST_STREAM. Sending after our own END_STREAM raises RuntimeError.
* The application must call ``acknowledge_received_data`` for every
  ``DataReceived.flow_length`` it got, also after the stream ended or was reset:
  that is what reopens the connection window. ``acknowledge_connection_data`` and
  ``acknowledge_stream_data`` do its two halves apart (the connection window at once,
  a stream's when its reader catches up). Data the engine drops without reporting it
  is acknowledged by the engine itself.
* ``DataReceived.pieces``, when set, are views of the bytes given to ``receive_data``:
  the application may keep them (they keep those bytes alive) or join them.
* ``send_data`` keeps large DATA (``send_queue.SEND_VIEWS``) as views of the bytes it was
  given until the output is taken (a bytearray or memoryview is copied first: it could
  change meanwhile).
* ``now`` should be passed to every ``receive_data`` call: the flood budgets refill
  with it. With a constant ``now`` they never refill and only the burst applies.

The engine is split by concern; this module is the coordinator (the input loop and
frame dispatch, connection-level frames, stream errors and closing, the commands):

* ``frames``: frame types, flags, header layout, frame writers.
* ``settings``: ``H2Config``, our SETTINGS frame, validation of the peer's.
* ``stream``: per-stream state and the stream state table (RFC 9113 5.1).
* ``windows``: flow control in both directions and queued DATA (``FlowControl``).
* ``send_queue``: the DATA one stream holds while it waits for window.
* ``headers``: HEADERS/CONTINUATION blocks, request admission (``HeaderBlocks``).
* ``validation``: header field rules for requests and trailers (RFC 9113 8).
* ``budgets``: flood bounds (token buckets, WINDOW_UPDATE credit, PING policing).
* ``invariants``: the checks behind ``invariant_violations()``.

``FlowControl`` and ``HeaderBlocks`` are bases of ``H2Connection`` that work on its
attributes, so the split adds no call or attribute hop per frame.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, List, Tuple

from . import hpack_decoder, invariants
from .budgets import WINDOW_UPDATE_CREDIT_MAX, Budget, PingPolicy, WindowUpdateCredit
from .errors import ConnectionViolation, ErrorCode
from .events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcked,
    StreamReset,
    WindowUpdated,
)
from .frames import (
    CONTINUATION,
    DATA,
    FLAG_ACK,
    FLAG_END_STREAM,
    FLAG_PADDED,
    GOAWAY,
    HEADERS,
    MIN_MAX_FRAME_SIZE,
    PING,
    PREFACE,
    PRIORITY,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    U32,
    U32X2,
    WINDOW_UPDATE,
    Payload,
    data_run,
    pack_header,
    unpack_header,
    write_goaway,
    write_headers,
    write_ping,
    write_rst,
    write_window_update,
)
from .headers import HeaderBlocks
from .send_queue import Bytes
from .settings import (
    DEFAULT_TABLE_SIZE,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    H2Config,
    check_config,
    local_settings_payload,
    read_settings,
)
from .stream import ENDED, RECENTLY_CLOSED_LIMIT, RESET_BY_PEER, RESET_BY_US, Stream
from .validation import CachedRequest, CachedStart
from .windows import DEFAULT_WINDOW, MAX_WINDOW, FlowControl

__all__ = [
    "PREFACE",
    "RECENTLY_CLOSED_LIMIT",
    "WINDOW_UPDATE_CREDIT_MAX",
    "H2Config",
    "H2Connection",
]


class H2Connection(HeaderBlocks, FlowControl):
    # Slots, for its mixins' state too: more attributes than the 30 keys CPython shares
    # between instances, whose attribute reads are then dict lookups (see CallCore). The
    # mixins declare no slots of their own, so an instance still has a (lazy) __dict__.
    __slots__ = (
        "_chunks",
        "_conn_recv_window",
        "_conn_refill",
        "_conn_send_window",
        "_conn_unacked",
        "_control_budget",
        "_decoder",
        "_events",
        "_goaway_last",
        "_hb_buf",
        "_hb_end_stream",
        "_hb_frames",
        "_hb_self_dep",
        "_hb_sid",
        "_highest_id",
        "_inbuf",
        "_local_initial_window",
        "_local_settings_pending",
        "_max_inbound_frame",
        "_need",
        "_now",
        "_out",
        "_peer_initial_window",
        "_peer_max_frame",
        "_ping_policy",
        "_pings_outstanding",
        "_preface_ok",
        "_queued_control",
        "_ready",
        "_recent",
        "_request_cache",
        "_reset_budget",
        "_sent_since_ping",
        "_settings_received",
        "_skipped",
        "_start_cache",
        "_stream_refill",
        "_streams",
        "_terminated",
        "_useless_budget",
        "_wu_credit",
        "_wu_warrants",
        "config",
        "last_stream_id",
        "peer_max_concurrent_streams",
        "peer_max_header_list_size",
        "pending_total",
        "streams_refused",
    )

    def __init__(self, config: H2Config | None = None) -> None:
        cfg = config if config is not None else H2Config()
        check_config(cfg)
        self.config = cfg
        self._out = bytearray()
        self._chunks: List[Any] = []  # output before ``_out``: headers and views of large DATA
        self._inbuf = bytearray()
        self._need = 0  # bytes _inbuf must hold before parsing is worth trying
        self._events: List[Event] = []
        self._now = 0.0

        self._preface_ok = False
        self._settings_received = False
        self._terminated = False

        self._streams: Dict[int, Stream] = {}
        # Streams with queued DATA and stream window, waiting for connection window,
        # in round-robin order.
        self._ready: Dict[int, Stream] = {}
        self.pending_total = 0  # DATA bytes queued on all streams, waiting for window
        # Recently closed stream id -> how it closed (RESET_BY_US, RESET_BY_PEER, ENDED).
        self._recent: OrderedDict[int, int] = OrderedDict()
        self._skipped: List[Tuple[int, int]] = []  # (first, last) stream ids never opened
        self._highest_id = 0  # highest stream id the peer used to open a stream
        self.last_stream_id = 0  # highest stream id reported by RequestReceived
        self._goaway_last = MAX_WINDOW  # streams above are refused after our GOAWAY
        # Streams refused with REFUSED_STREAM (above _goaway_last, or past
        # max_concurrent_streams): never reported as events, so counted here.
        self.streams_refused = 0

        # Receiving side. Until the peer ACKs our SETTINGS it may still assume the
        # RFC defaults, so the larger of the two is enforced (RFC 9113 6.9.2).
        self._local_settings_pending = False
        self._local_initial_window = max(cfg.initial_window_size, DEFAULT_WINDOW)
        self._conn_recv_window = DEFAULT_WINDOW
        self._conn_unacked = 0
        self._conn_refill = cfg.connection_window_size // 2
        self._stream_refill = max(1, cfg.initial_window_size // 2)
        self._max_inbound_frame = cfg.max_frame_size

        # Sending side: the peer's settings.
        self._conn_send_window = DEFAULT_WINDOW
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = MIN_MAX_FRAME_SIZE  # the RFC default until SETTINGS
        self.peer_max_concurrent_streams = MAX_WINDOW
        self.peer_max_header_list_size = 0  # 0: not announced

        self._decoder = hpack_decoder.Decoder(max(cfg.header_table_size, DEFAULT_TABLE_SIZE), cfg.max_header_list_size)
        # Read-only request blocks -> validated (headers, list size, content-length),
        # and the memo their requests share (RequestReceived.memo). Emptied whenever a
        # block that may change the dynamic table is decoded.
        self._request_cache: Dict[bytes, CachedRequest] = {}
        self._start_cache: Dict[Tuple[Tuple[bytes, bytes], ...], CachedStart] = {}

        # Header block being assembled from HEADERS + CONTINUATION frames.
        self._hb_sid = 0
        self._hb_buf = bytearray()
        self._hb_end_stream = False
        self._hb_self_dep = False
        self._hb_frames = 0

        self._reset_budget = Budget(cfg.reset_rate, cfg.reset_burst)
        self._control_budget = Budget(cfg.control_frame_rate, cfg.control_frame_burst)
        self._useless_budget = Budget(cfg.useless_frame_rate, cfg.useless_frame_burst)
        self._queued_control = 0
        self._pings_outstanding = 0
        self._ping_policy = PingPolicy(cfg.min_ping_interval, cfg.max_ping_strikes, cfg.permit_pings_without_calls)
        self._sent_since_ping = False  # HEADERS or DATA written since the last PING came
        self._wu_warrants = 0  # DATA frames written and streams opened: see budgets.WINDOW_UPDATE_CREDIT
        self._wu_credit = WindowUpdateCredit()

    # ------------------------------------------------------------------ state

    @property
    def open_stream_count(self) -> int:
        """Streams open or half-closed (they count against MAX_CONCURRENT_STREAMS)."""
        return len(self._streams)

    @property
    def terminated(self) -> bool:
        return self._terminated

    @property
    def handshake_done(self) -> bool:
        """The peer sent the connection preface and its first SETTINGS frame."""
        return self._settings_received

    def invariant_violations(self) -> List[str]:
        """Descriptions of every broken internal invariant (empty when all hold).

        For tests and fuzzing: meant to be called between inputs and commands, it
        costs a pass over the open streams. It reads the state and changes nothing."""
        return invariants.violations(self)

    # ---------------------------------------------------------------- commands

    def initiate_connection(self) -> None:
        """Queue the server connection preface (our SETTINGS frame)."""
        cfg = self.config
        payload = local_settings_payload(cfg)
        out = self._out
        out += pack_header(len(payload) << 8 | SETTINGS, 0, 0)
        out += payload
        self._local_settings_pending = True
        increment = cfg.connection_window_size - self._conn_recv_window
        if increment > 0:
            write_window_update(self._out, 0, increment)
            self._conn_recv_window += increment

    def parts_to_send(self) -> List[Bytes]:
        """Take every byte queued for the peer as parts to send in order (empty if
        none): bytes, and views of the bytes that large DATA was given in, for a writer
        that sends them without joining them (``transport.writelines``)."""
        self._queued_control = 0
        out = self._out
        chunks = self._chunks
        if chunks:
            if out:
                chunks.append(bytes(out))
                out.clear()
            self._chunks = []
            return chunks
        if not out:
            return []
        data = bytes(out)
        out.clear()
        return [data]

    def data_to_send(self) -> bytes:
        """Take every byte queued for the peer, joined (empty if none)."""
        return b"".join(self.parts_to_send())

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """Queue an HPACK-encoded header block (see hpack_encoder) on a stream.
        Sent after any DATA still waiting for window on that stream."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        if st.end_queued:
            raise RuntimeError(f"stream {stream_id}: already ended")
        if st.pending is not None:
            if st.trailers is not None:
                raise RuntimeError(f"stream {stream_id}: a header block is already queued")
            st.trailers = bytes(block)
            st.trailers_end = end_stream
            st.end_queued = end_stream
            return
        self._sent_since_ping = True
        write_headers(self._out, stream_id, block, end_stream, self._peer_max_frame)
        if end_stream:
            st.end_queued = True
            self._local_end(st)

    def stream_is_open(self, stream_id: int) -> bool:
        """The stream is open or half-closed (not reset, not fully closed)."""
        return stream_id in self._streams

    def stream_remote_open(self, stream_id: int) -> bool:
        """The peer may still send DATA on the stream (it has not ended it)."""
        st = self._streams.get(stream_id)
        return st is not None and not st.remote_closed

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Send RST_STREAM and drop anything still queued for the stream."""
        if self._terminated:
            return
        st = self._streams.pop(stream_id, None)
        if st is None:
            return
        self._drop_pending(st)
        write_rst(self._out, stream_id, error_code)
        self._remember(stream_id, RESET_BY_US)

    def ping(self, opaque: bytes) -> None:
        if len(opaque) != 8:
            raise ValueError("PING data must be 8 bytes")
        if self._terminated:
            return
        self._pings_outstanding += 1
        write_ping(self._out, opaque, False)

    def goaway(self, last_stream_id: int, error_code: int = 0, debug_data: bytes = b"") -> None:
        """Send GOAWAY. Streams the peer opens above ``last_stream_id`` later are
        refused with RST_STREAM REFUSED_STREAM and never reported."""
        if self._terminated:
            return
        # A later GOAWAY may lower the last stream id, never raise it (RFC 9113 6.8).
        last = min(last_stream_id, self._goaway_last)
        self._goaway_last = last
        write_goaway(self._out, last, error_code, debug_data)

    # ------------------------------------------------------------------ input

    def receive_data(self, data: Bytes, now: float = 0.0) -> List[Event]:
        """Feed received bytes; return the events they complete, in order."""
        if self._terminated:
            return []
        events: List[Event] = []
        self._events = events
        self._now = now
        if type(data) is not bytes:
            data = bytes(data)
        inbuf = self._inbuf
        pos = 0
        try:
            if not self._preface_ok:
                if inbuf:
                    inbuf += data
                    if len(inbuf) < self._need:
                        return events
                    data = bytes(inbuf)
                    inbuf.clear()
                got = data[: len(PREFACE)]
                if not PREFACE.startswith(got):
                    if got[:5] in (b"GET /", b"POST ", b"HEAD ", b"PUT /") or got[:4] == b"OPTI":
                        raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "HTTP/1.x request")
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "invalid preface")
                if len(got) < len(PREFACE):
                    self._inbuf += data
                    self._need = len(PREFACE)
                    return events
                self._preface_ok = True
                pos = len(PREFACE)
            else:
                # A frame begun in an earlier read: complete it (and only it) from this
                # one, then scan the rest of this read in place, without copying it.
                while inbuf:
                    missing = self._need - len(inbuf)
                    if len(data) - pos < missing:
                        inbuf += memoryview(data)[pos:]
                        return events  # a large frame arriving in pieces: don't re-scan
                    inbuf += memoryview(data)[pos : pos + missing]
                    pos += missing
                    frame = bytes(inbuf)
                    inbuf.clear()
                    self._scan(frame, 0)  # may keep a remainder: then the loop tops it up
                    if self._terminated:
                        return events
            self._scan(data, pos)
        except ConnectionViolation as exc:
            self._fail(exc.code, exc.message)
        return events

    def _scan(self, buf: bytes, pos: int) -> None:
        """Handle the complete frames of ``buf`` from ``pos``; keep an incomplete last
        one in ``_inbuf``, with ``_need`` the bytes it takes to complete it."""
        end = len(buf)
        need = 9
        max_frame = self._max_inbound_frame
        handlers = _FRAME_HANDLERS
        while end - pos >= 9:
            head, flags, sid = unpack_header(buf, pos)
            length = head >> 8
            if length > max_frame:
                raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds limit")
            fend = pos + 9 + length
            if fend > end:
                need = 9 + length
                break
            ftype = head & 0xFF
            sid &= 0x7FFFFFFF
            start = pos + 9
            pos = fend
            if self._hb_sid and ftype != CONTINUATION:
                # RFC 9113 6.10: a header block is contiguous.
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "frame inside a header block")
            if not self._settings_received and ftype != SETTINGS:
                # RFC 9113 3.4: the preface is followed by a SETTINGS frame.
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "SETTINGS expected after preface")
            if ftype == DATA:
                if length and not flags & (FLAG_PADDED | FLAG_END_STREAM) and end - pos >= 9:
                    pos, flags, payload = data_run(buf, start, pos, end, sid, max_frame)
                else:
                    payload = buf[start:fend]
                self._on_data(flags, sid, payload)
            elif ftype == HEADERS:
                self._on_headers(flags, sid, buf[start:fend])
            else:
                payload = buf[start:fend]
                handler = handlers.get(ftype)
                if handler is None:
                    self._charge_useless("unknown frame types")  # RFC 9113 5.5: ignore
                else:
                    handler(self, flags, sid, payload)
            if self._terminated:
                return
        if pos < end:
            self._inbuf += memoryview(buf)[pos:]
        self._need = need

    # DATA (RFC 9113 6.1)
    def _on_data(self, flags: int, sid: int, payload: Payload) -> None:
        if sid == 0:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        # A run's pieces (data_run) are never padded: their length is the flow.
        flow = len(payload) if isinstance(payload, bytes) else sum(map(len, payload))
        # Every DATA frame counts against the connection window (RFC 9113 6.9).
        self._conn_recv_window -= flow
        if self._conn_recv_window < self._conn_refill:
            if self._conn_recv_window < 0:
                raise ConnectionViolation(ErrorCode.FLOW_CONTROL_ERROR, "connection receive window exceeded")
            if self._conn_unacked:
                self._refill_connection(0)  # credit already given back goes out now
        if flags & FLAG_PADDED:
            if flow == 0:
                raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "DATA too short for padding")
            assert isinstance(payload, bytes)
            pad = payload[0]
            if pad >= flow:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "DATA padding too long")
            data: Payload = payload[1 : flow - pad]
            length = len(data)
        else:
            data, length = payload, flow
        st = self._streams.get(sid)
        if st is None:
            if not sid & 1 or sid > self._highest_id:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "DATA on idle stream")
            self._refill_connection(flow)  # never reported: nobody else will ack it
            if self._recent.get(sid) == RESET_BY_US:
                return  # in flight when we reset it (RFC 9113 5.1, 6.4)
            self._charge_useless("frames on closed streams")
            self._stream_error(sid, ErrorCode.STREAM_CLOSED, report=False, charge=False)
            return
        if st.remote_closed:
            self._refill_connection(flow)
            self._stream_error(sid, ErrorCode.STREAM_CLOSED)
            return
        st.recv_window -= flow
        if st.recv_window < 0:
            self._refill_connection(flow)
            self._stream_error(sid, ErrorCode.FLOW_CONTROL_ERROR)
            return
        end_stream = flags & FLAG_END_STREAM
        if st.content_length >= 0:
            st.received += length
            if st.received > st.content_length or (end_stream and st.received != st.content_length):
                # RFC 9113 8.1.1: content-length must match the DATA received.
                self._refill_connection(flow)
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
                return
        if end_stream:
            self._events.append(DataReceived(sid, data, flow, True))
            st.remote_closed = True
            if st.local_closed:
                self._close(st)
        else:
            if not flow:
                self._charge_useless("empty DATA frames")
            self._events.append(DataReceived(sid, data, flow, False))

    # PRIORITY (RFC 9113 6.3): parsed and ignored.
    def _on_priority(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        self._charge_useless("PRIORITY frames")
        if len(payload) != 5:
            code = ErrorCode.FRAME_SIZE_ERROR
        elif U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            code = ErrorCode.PROTOCOL_ERROR
        else:
            return
        if sid & 1 and sid > self._highest_id:
            # An idle stream: the reset closes it, as if the peer had opened it, so
            # a later HEADERS on it is a frame on a stream we reset, not a new one.
            if sid > self._highest_id + 2:
                self._skip_to(sid)
            self._highest_id = sid
        self._stream_error(sid, code, report=sid in self._streams)

    # RST_STREAM (RFC 9113 6.4)
    def _on_rst_stream(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM length != 4")
        if sid == 0:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if not sid & 1 or sid > self._highest_id:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on idle stream")
        # Rapid reset (CVE-2023-44487): every reset from the peer is charged.
        if not self._reset_budget.take(self._now):
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many stream resets")
        st = self._streams.pop(sid, None)
        if st is None:
            return
        self._drop_pending(st)
        self._remember(sid, RESET_BY_PEER)
        self._events.append(StreamReset(sid, U32.unpack(payload)[0], True))

    # SETTINGS (RFC 9113 6.5)
    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if payload:
                raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with payload")
            if not self._settings_received:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "SETTINGS expected after preface")
            self._on_settings_ack()
            return
        if len(payload) % 6:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        self._settings_received = True
        self._charge_control()
        values = read_settings(payload)
        initial_window = values.get(SETTINGS_INITIAL_WINDOW_SIZE, self._peer_initial_window)
        if SETTINGS_MAX_FRAME_SIZE in values:
            self._peer_max_frame = values[SETTINGS_MAX_FRAME_SIZE]
        if SETTINGS_MAX_CONCURRENT_STREAMS in values:
            self.peer_max_concurrent_streams = values[SETTINGS_MAX_CONCURRENT_STREAMS]
        if SETTINGS_MAX_HEADER_LIST_SIZE in values:
            self.peer_max_header_list_size = values[SETTINGS_MAX_HEADER_LIST_SIZE]
        # HEADER_TABLE_SIZE: our encoder never indexes, so any size suits it.
        # Unknown settings are ignored (RFC 9113 6.5.2).
        delta = initial_window - self._peer_initial_window
        if delta:
            # RFC 9113 6.9.2: every stream's send window moves by the delta. Applied
            # once per frame (the net change), so a frame repeating the setting
            # costs one pass over the streams.
            self._peer_initial_window = initial_window
            for st in self._streams.values():
                st.send_window += delta
                if st.send_window > MAX_WINDOW:
                    raise ConnectionViolation(ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow")
        out = self._out
        out += pack_header(SETTINGS, FLAG_ACK, 0)
        if delta > 0 and self.pending_total:
            for st in list(self._streams.values()):
                if st.pending is not None and st.stream_id in self._streams:
                    self._flush_stream(st)
            # Every stream's send window grew: writers waiting for window must hear
            # of it as they do of a WINDOW_UPDATE.
            self._events.append(WindowUpdated(0))

    def _on_settings_ack(self) -> None:
        if not self._local_settings_pending:
            self._charge_useless("unsolicited ACKs")
            return
        self._local_settings_pending = False
        cfg = self.config
        delta = cfg.initial_window_size - self._local_initial_window
        if delta:
            self._local_initial_window = cfg.initial_window_size
            for st in self._streams.values():
                st.recv_window += delta
        self._decoder.max_allowed_table_size = cfg.header_table_size
        self._request_cache.clear()  # the next block must be checked against the new size

    # PUSH_PROMISE (RFC 9113 8.4): clients cannot push.
    def _on_push_promise(self, flags: int, sid: int, payload: bytes) -> None:
        raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE from client")

    # PING (RFC 9113 6.7)
    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 8:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "PING length != 8")
        if sid:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if flags & FLAG_ACK:
            if self._pings_outstanding > 0:
                self._pings_outstanding -= 1
                self._events.append(PingAcked(payload))
            else:
                self._charge_useless("unsolicited ACKs")
            return
        self._charge_control()
        if self.config.max_ping_strikes:
            sent = self._sent_since_ping
            self._sent_since_ping = False
            if self._ping_policy.too_many(self._now, sent, bool(self._streams)):
                raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too_many_pings")
        write_ping(self._out, payload, True)

    # GOAWAY (RFC 9113 6.8)
    def _on_goaway(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) < 8:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY too short")
        if sid:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        last, code = U32X2.unpack_from(payload)
        self._events.append(GoAwayReceived(code, last & 0x7FFFFFFF, payload[8:]))

    # WINDOW_UPDATE (RFC 9113 6.9)
    def _on_window_update(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length != 4")
        if not self._wu_credit.take(self._wu_warrants):  # see budgets.WINDOW_UPDATE_CREDIT
            self._charge_useless("WINDOW_UPDATE frames")
        increment = U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            window = self._conn_send_window + increment
            if window > MAX_WINDOW:
                raise ConnectionViolation(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
            self._conn_send_window = window
            waiting = self.pending_total
            if self._ready:
                self._flush_ready()
            if waiting:
                self._events.append(WindowUpdated(0))
            return
        st = self._streams.get(sid)
        if st is None:
            if not sid & 1 or sid > self._highest_id:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE on idle stream")
            return  # closed: WINDOW_UPDATE may still be in flight (RFC 9113 6.9)
        if increment == 0:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            return
        window = st.send_window + increment
        if window > MAX_WINDOW:
            self._stream_error(sid, ErrorCode.FLOW_CONTROL_ERROR)
            return
        st.send_window = window
        if st.pending is not None:
            self._flush_stream(st)
            if not st.local_closed:
                self._events.append(WindowUpdated(sid))

    # ---------------------------------------------------------------- helpers

    def _fail(self, code: int, message: str) -> None:
        """Connection error (RFC 9113 5.4.1): GOAWAY, then ConnectionTerminated."""
        self._terminated = True
        self._streams.clear()
        self._ready.clear()
        self.pending_total = 0
        self._inbuf = bytearray()
        self._hb_buf = bytearray()
        write_goaway(self._out, self.last_stream_id, code, message.encode("utf-8"))
        self._events.append(ConnectionTerminated(code, message))

    def _stream_error(self, sid: int, code: ErrorCode, report: bool = True, charge: bool = True) -> None:
        """Stream error (RFC 9113 5.4.2): RST_STREAM and forget the stream."""
        st = self._streams.pop(sid, None)
        if st is not None:
            self._drop_pending(st)
        self._remember(sid, RESET_BY_US)
        write_rst(self._out, sid, code)
        self._queued_control += 1
        if self._queued_control > self.config.max_queued_control_frames:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many queued frames")
        if charge and not self._reset_budget.take(self._now):
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many stream resets")
        if report:
            self._events.append(StreamReset(sid, code, False))

    def _charge_control(self) -> None:
        self._queued_control += 1
        if self._queued_control > self.config.max_queued_control_frames:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many queued frames")
        if not self._control_budget.take(self._now):
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many control frames")

    def _charge_useless(self, what: str) -> None:
        if not self._useless_budget.take(self._now):
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, f"too many {what}")

    def _remember(self, sid: int, how: int) -> None:
        recent = self._recent
        recent[sid] = how
        if len(recent) > RECENTLY_CLOSED_LIMIT:
            # The oldest goes. (From a plain dict, deleting the first key again and again
            # leaves holes that every next lookup of the first key walks past.)
            recent.popitem(last=False)

    def _close(self, st: Stream) -> None:
        del self._streams[st.stream_id]
        self._remember(st.stream_id, ENDED)

    def _local_end(self, st: Stream) -> None:
        st.local_closed = True
        self._ready.pop(st.stream_id, None)
        if st.remote_closed:
            self._close(st)


# The other frame types' handlers, as functions: bound methods kept on the connection
# would hold it in a reference cycle, left to the cyclic collector when it closes.
_FRAME_HANDLERS: Dict[int, Callable[[H2Connection, int, int, bytes], None]] = {
    PRIORITY: H2Connection._on_priority,
    RST_STREAM: H2Connection._on_rst_stream,
    SETTINGS: H2Connection._on_settings,
    PUSH_PROMISE: H2Connection._on_push_promise,
    PING: H2Connection._on_ping,
    GOAWAY: H2Connection._on_goaway,
    WINDOW_UPDATE: H2Connection._on_window_update,
    CONTINUATION: H2Connection._on_continuation,
}
