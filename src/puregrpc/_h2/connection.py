"""The server side of an HTTP/2 connection (RFC 9113), sans-I/O.

Bytes in (``receive_data``), events out; commands in (``send_*``, ``reset_stream``,
``ping``, ``goaway``, ``acknowledge_received_data``), bytes out (``data_to_send``).
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
  that is what reopens the connection window. Data the engine drops without
  reporting it is acknowledged by the engine itself.
* ``now`` should be passed to every ``receive_data`` call: the flood budgets refill
  with it. With a constant ``now`` they never refill and only the burst applies.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple, Union

from . import hpack_decoder
from .errors import ConnectionViolation, ErrorCode
from .events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    Headers,
    PingAcked,
    RequestHeadersTooLarge,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)

Bytes = Union[bytes, bytearray, memoryview]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 section 6).
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

# Flags.
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

# Settings identifiers (RFC 9113 section 6.5.2, RFC 8441, RFC 9218).
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8
SETTINGS_NO_RFC7540_PRIORITIES = 0x9

MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535
DEFAULT_TABLE_SIZE = 4096
MIN_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = (1 << 24) - 1

# Stream ids we closed recently, remembered so late frames on them are told apart
# from frames on streams that never existed (RFC 9113 section 5.1, "closed").
RECENTLY_CLOSED_LIMIT = 1024
# How a remembered stream closed, which decides what a late frame on it means.
RESET_BY_US = 1  # frames the peer sent before it saw our RST_STREAM are ignored (5.1)
RESET_BY_PEER = 2  # frames after the peer's own RST_STREAM: stream error STREAM_CLOSED
ENDED = 3  # both sides sent END_STREAM: HEADERS is a connection error STREAM_CLOSED
# Ranges of stream ids the peer skipped (never opened), remembered so that a late
# HEADERS on one is told apart from one on a closed stream we forgot.
SKIPPED_RANGES_LIMIT = 64

# WINDOW_UPDATE accounting. A client sends WINDOW_UPDATE to give back credit for DATA
# it received from us: at most one for the stream and one for the connection per DATA
# frame (grpcio, grpc-go, grpc-java, nghttp2 and h2 batch them further, to one per
# half or quarter window consumed). grpcio also opens each new stream's window by a
# few bytes before any DATA comes, and its increments are often tiny (+5, +105), so
# neither the increment's size nor the presence of DATA tells a legitimate
# WINDOW_UPDATE from a flood; their number does. So every DATA frame we write and
# every stream the peer opens earns it WINDOW_UPDATE_CREDIT free WINDOW_UPDATEs;
# beyond that credit each one is charged to the useless-frame budget. Measured with a
# grpcio 1.85 client (unary, failing, server-streaming, bidi calls; small and large
# messages; BDP probing on and off): at most 1.15 WINDOW_UPDATEs per DATA frame or
# stream, and no client can need more than 2 (stream and connection) per frame plus
# one per stream, so 3 leaves a legitimate transfer, however fast and however small
# its windows, never short of credit. A flood that no DATA or stream warrants (e.g. +1
# increments on the connection, 1.25 million frames per second) ends with
# ENHANCE_YOUR_CALM after the useless-frame burst. The credit is capped so that a
# long download does not bank an allowance for a later flood. A DATA frame cut short
# by the stream window under WINDOW_UPDATE_SMALL_FRAME bytes earns nothing:
# otherwise tiny increments on a stream with queued DATA ("data dribble",
# CVE-2019-9511) would each earn the credit for the next.
WINDOW_UPDATE_CREDIT = 3
WINDOW_UPDATE_CREDIT_MAX = 8192
WINDOW_UPDATE_SMALL_FRAME = 1024

# Frame header: length (24 bits) and type packed in one u32, flags, stream id.
_FRAME_HEADER = struct.Struct(">IBI")
_pack_header = _FRAME_HEADER.pack
_unpack_header = _FRAME_HEADER.unpack_from
_U32 = struct.Struct(">I")
_U32X2 = struct.Struct(">II")
_SETTING = struct.Struct(">HI")

# RFC 9113 section 8.2.2: connection-specific fields make a message malformed.
_CONNECTION_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority"))

# A block that left the decoder's dynamic table unchanged (no insertion, no size
# update) decodes the same way until the table changes, so its validated header
# list is cached by its bytes, and the cache emptied whenever the table changes.
# Bounds of the cache of such blocks (per connection): entries, block bytes, and
# decoded list size, so the cache stays small whatever the peer sends.
REQUEST_CACHE_ENTRIES = 16
REQUEST_CACHE_MAX_BLOCK = 512
REQUEST_CACHE_MAX_LIST = 4096

# RFC 9113 8.2.1, checked on all names (joined with b" ") or values (joined with
# b"\n") at once, with C-speed bytes operations. Names: only visible ASCII except
# uppercase; a colon only as the first byte of a pseudo-header.
_NAME_BYTES = bytes(c for c in range(0x21, 0x7F) if not 0x41 <= c <= 0x5A) + b" "


def _fields_ok(names: List[bytes], values: List[bytes], pseudo: int) -> bool:
    """Names and values of one block are well formed (empty names are checked by
    the caller)."""
    joined = b" ".join(names)
    if joined.translate(None, _NAME_BYTES) or joined.count(b" ") != len(names) - 1 or joined.count(b":") != pseudo:
        return False
    # Values: no NUL, CR or LF. Leading or trailing SP/HTAB is checked apart
    # (_padded_values): such values are trimmed, not refused.
    joined = b"\n".join(values)
    return joined.count(b"\n") == len(values) - 1 and b"\r" not in joined and b"\x00" not in joined


def _padded_values(values: List[bytes]) -> bool:
    """Some value has leading or trailing SP or HTAB. RFC 9113 8.2.1 calls that
    malformed, but grpcio's client sends such metadata values and grpcio's server
    serves them, so they are trimmed as HTTP field values are (RFC 9110 5.5)."""
    joined = b"\n".join(values)
    if b"\n " in joined or b" \n" in joined or b"\n\t" in joined or b"\t\n" in joined:
        return True
    return joined[:1] in (b" ", b"\t") or joined[-1:] in (b" ", b"\t")


@dataclass
class H2Config:
    """Local settings and limits of one connection."""

    max_concurrent_streams: int = 1000
    initial_window_size: int = 1 << 20  # our per-stream receive window
    connection_window_size: int = 1 << 24  # our connection receive window
    max_frame_size: int = 16384  # largest frame we accept
    max_header_list_size: int = 16384  # after HPACK decoding (RFC 9113 6.5.2)
    header_table_size: int = 4096  # our HPACK decoder table

    # Flood and abuse bounds. Every budget is a token bucket refilled at ``*_rate``
    # tokens per second of ``now`` up to ``*_burst``; an empty bucket is a
    # connection error ENHANCE_YOUR_CALM.
    #
    # Streams ended abnormally because of the peer: its RST_STREAMs, streams we
    # refuse, stream errors it provokes (CVE-2023-44487 "rapid reset" and the
    # "MadeYouReset" variant). The burst covers cancelling every stream of a full
    # connection at once.
    reset_rate: float = 200.0
    reset_burst: int = 1000
    # PING and SETTINGS frames, which make us queue an ACK (CVE-2019-9512/9515).
    control_frame_rate: float = 100.0
    control_frame_burst: int = 500
    # Frames that cost us work and carry nothing: empty DATA without END_STREAM,
    # empty header fragments without END_HEADERS, PRIORITY, unknown frame types,
    # unsolicited ACKs, frames on closed streams (CVE-2019-9518 and friends), and
    # WINDOW_UPDATEs beyond what the DATA we sent warrants (see
    # WINDOW_UPDATE_CREDIT).
    useless_frame_rate: float = 100.0
    useless_frame_burst: int = 1000
    # ACKs and RST_STREAMs we generated that the caller has not taken with
    # data_to_send() yet: bounds our output when the peer does not read.
    max_queued_control_frames: int = 1000
    # Client PING policing (gRFC A8, grpc-core's server rules): a PING that comes
    # sooner than ``min_ping_interval`` seconds after the previous one, with no
    # HEADERS or DATA sent by us in between, is a strike; more than
    # ``max_ping_strikes`` ends the connection with GOAWAY ENHANCE_YOUR_CALM and debug
    # data "too_many_pings". With no stream open the interval is two hours unless
    # ``permit_pings_without_calls``. 0 strikes (the engine's default) turns it off.
    min_ping_interval: float = 300.0
    max_ping_strikes: int = 0
    permit_pings_without_calls: bool = False
    # CONTINUATION frames in one header block (CVE-2024-27316 family); the
    # compressed block is also bounded by max_header_block_size.
    max_continuation_frames: int = 128

    @property
    def max_header_block_size(self) -> int:
        """Bound on an accumulated compressed header block (HEADERS+CONTINUATION),
        past which the connection fails with ENHANCE_YOUR_CALM.

        A header list over ``max_header_list_size`` only refuses its stream, but
        that needs the whole block (HPACK state is per connection), so blocks well
        past the limit are still taken in: 8x the limit, at least 256 KiB."""
        return max(self.max_header_list_size * 8, 256 * 1024)


class _Budget:
    """A token bucket keyed on the caller's clock."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        stamp = self.stamp
        if stamp is None or now > stamp:
            if stamp is not None:
                tokens = self.tokens + (now - stamp) * self.rate
                self.tokens = tokens if tokens < self.burst else self.burst
            self.stamp = now
        self.tokens -= 1.0
        return self.tokens >= 0.0


class _Stream:
    __slots__ = (
        "content_length",
        "end_queued",
        "local_closed",
        "pending",
        "pending_end",
        "received",
        "recv_unacked",
        "recv_window",
        "remote_closed",
        "send_window",
        "stream_id",
        "trailers",
        "trailers_end",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unacked = 0
        self.remote_closed = False
        self.local_closed = False  # END_STREAM written to the output
        self.end_queued = False  # END_STREAM requested by the application
        self.pending: bytearray | None = None  # DATA waiting for window
        self.pending_end = False
        self.trailers: bytes | None = None  # header block queued behind pending
        self.trailers_end = False
        self.content_length = -1
        self.received = 0


class H2Connection:
    def __init__(self, config: H2Config | None = None) -> None:
        cfg = config if config is not None else H2Config()
        if not MIN_MAX_FRAME_SIZE <= cfg.max_frame_size <= MAX_MAX_FRAME_SIZE:
            raise ValueError("max_frame_size out of range")
        if not 0 <= cfg.initial_window_size <= MAX_WINDOW:
            raise ValueError("initial_window_size out of range")
        if not DEFAULT_WINDOW <= cfg.connection_window_size <= MAX_WINDOW:
            raise ValueError("connection_window_size out of range")
        self.config = cfg
        self._out = bytearray()
        self._inbuf = bytearray()
        self._need = 0  # bytes _inbuf must hold before parsing is worth trying
        self._events: List[Event] = []
        self._now = 0.0

        self._preface_ok = False
        self._settings_received = False
        self._terminated = False

        self._streams: Dict[int, _Stream] = {}
        # Streams with queued DATA and stream window, waiting for connection window,
        # in round-robin order.
        self._ready: Dict[int, _Stream] = {}
        self.pending_total = 0  # DATA bytes queued on all streams, waiting for window
        # Recently closed stream id -> how it closed (RESET_BY_US, RESET_BY_PEER, ENDED).
        self._recent: Dict[int, int] = {}
        self._skipped: List[Tuple[int, int]] = []  # (first, last) stream ids never opened
        self._highest_id = 0  # highest stream id the peer used to open a stream
        self.last_stream_id = 0  # highest stream id reported by RequestReceived
        self._goaway_last = MAX_WINDOW  # streams above are refused after our GOAWAY

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
        self._peer_max_frame = MIN_MAX_FRAME_SIZE
        self.peer_max_concurrent_streams = MAX_WINDOW
        self.peer_max_header_list_size = 0  # 0: not announced

        self._decoder = hpack_decoder.Decoder(max(cfg.header_table_size, DEFAULT_TABLE_SIZE), cfg.max_header_list_size)
        # Read-only request blocks -> validated (headers, list size, content-length).
        # Emptied whenever a block that may change the dynamic table is decoded.
        self._request_cache: Dict[bytes, Tuple[Headers, int, int]] = {}

        # Header block being assembled from HEADERS + CONTINUATION frames.
        self._hb_sid = 0
        self._hb_buf = bytearray()
        self._hb_end_stream = False
        self._hb_self_dep = False
        self._hb_frames = 0

        self._reset_budget = _Budget(cfg.reset_rate, cfg.reset_burst)
        self._control_budget = _Budget(cfg.control_frame_rate, cfg.control_frame_burst)
        self._useless_budget = _Budget(cfg.useless_frame_rate, cfg.useless_frame_burst)
        self._queued_control = 0
        self._pings_outstanding = 0
        self._last_ping_received: float | None = None
        self._ping_strikes = 0
        self._sent_since_ping = False  # HEADERS or DATA written since the last PING came
        self._wu_warrants = 0  # DATA frames written and streams opened: see WINDOW_UPDATE_CREDIT
        self._wu_warrants_seen = 0  # _wu_warrants when the credit was last updated
        self._wu_credit = 0  # WINDOW_UPDATEs the peer may still send for free

        self._handlers: Dict[int, Callable[[int, int, bytes], None]] = {
            PRIORITY: self._on_priority,
            RST_STREAM: self._on_rst_stream,
            SETTINGS: self._on_settings,
            PUSH_PROMISE: self._on_push_promise,
            PING: self._on_ping,
            GOAWAY: self._on_goaway,
            WINDOW_UPDATE: self._on_window_update,
            CONTINUATION: self._on_continuation,
        }

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

    @property
    def outbound_window(self) -> int:
        """The connection send window (may be negative after a SETTINGS change)."""
        return self._conn_send_window

    def stream_send_window(self, stream_id: int) -> int:
        st = self._streams.get(stream_id)
        return st.send_window if st is not None else 0

    def invariant_violations(self) -> List[str]:
        """Descriptions of every broken internal invariant (empty when all hold).

        For tests and fuzzing: meant to be called between inputs and commands, it
        costs a pass over the open streams. It reads the state and changes nothing."""
        bad: List[str] = []
        cfg = self.config
        terminated = self._terminated
        # Connection windows (RFC 9113 6.9.1: never above 2**31-1). SETTINGS never moves
        # the connection windows, and we never send past the send window, so neither
        # goes below 0; the receive window only does in the frame that ends the
        # connection with FLOW_CONTROL_ERROR.
        if not 0 <= self._conn_send_window <= MAX_WINDOW:
            bad.append(f"connection send window {self._conn_send_window} out of [0, 2**31-1]")
        if not (-MAX_WINDOW if terminated else 0) <= self._conn_recv_window <= MAX_WINDOW:
            bad.append(f"connection receive window {self._conn_recv_window} out of range")
        if self._conn_unacked < 0:
            bad.append(f"connection unacknowledged bytes {self._conn_unacked} < 0")
        # A stream receive window goes negative only when our SETTINGS ACK shrinks
        # it (RFC 9113 6.9.2), by at most the distance from the default window; DATA
        # beyond the window resets the stream at once.
        recv_floor = min(0, cfg.initial_window_size - DEFAULT_WINDOW)
        pending_sum = 0
        for sid, st in self._streams.items():
            if st.stream_id != sid:
                bad.append(f"stream {st.stream_id} filed under id {sid}")
            if not sid & 1 or sid > self._highest_id:
                bad.append(f"stream {sid}: not a client stream id at or below {self._highest_id}")
            if not -MAX_WINDOW <= st.send_window <= MAX_WINDOW:
                bad.append(f"stream {sid}: send window {st.send_window} out of [-(2**31-1), 2**31-1]")
            if not recv_floor <= st.recv_window <= MAX_WINDOW:
                bad.append(f"stream {sid}: receive window {st.recv_window} out of [{recv_floor}, 2**31-1]")
            if st.recv_unacked < 0:
                bad.append(f"stream {sid}: unacknowledged bytes {st.recv_unacked} < 0")
            if st.local_closed and st.remote_closed:
                bad.append(f"stream {sid}: closed in both directions but still in the stream table")
            if st.local_closed and not st.end_queued:
                bad.append(f"stream {sid}: END_STREAM written but not requested")
            if st.local_closed and (st.pending is not None or st.trailers is not None):
                bad.append(f"stream {sid}: output queued after END_STREAM")
            if st.pending is not None:
                if not st.pending:
                    bad.append(f"stream {sid}: empty DATA queue left in place")
                pending_sum += len(st.pending)
            elif st.trailers is not None:
                bad.append(f"stream {sid}: header block queued behind no DATA")
            if st.content_length >= 0 and st.received > st.content_length:
                bad.append(f"stream {sid}: {st.received} bytes received past content-length {st.content_length}")
            if sid in self._recent:
                bad.append(f"stream {sid}: open and remembered as closed")
        if pending_sum != self.pending_total:
            bad.append(f"pending_total {self.pending_total} != {pending_sum} queued on the streams")
        for sid, st in self._ready.items():
            if self._streams.get(sid) is not st:
                bad.append(f"stream {sid}: waiting for connection window but not open")
            elif not st.pending:
                bad.append(f"stream {sid}: waiting for connection window with nothing queued")
        if len(self._streams) > cfg.max_concurrent_streams:
            bad.append(f"{len(self._streams)} streams open, above MAX_CONCURRENT_STREAMS {cfg.max_concurrent_streams}")
        if len(self._recent) > RECENTLY_CLOSED_LIMIT:
            bad.append(f"{len(self._recent)} closed streams remembered, above {RECENTLY_CLOSED_LIMIT}")
        if len(self._skipped) > SKIPPED_RANGES_LIMIT or any(
            not 0 < first <= last < self._highest_id for first, last in self._skipped
        ):
            bad.append(f"skipped stream id ranges out of bounds: {self._skipped[:4]}...")
        if self.last_stream_id > self._highest_id:
            bad.append(f"last reported stream {self.last_stream_id} above highest id seen {self._highest_id}")
        if self.pending_total < 0 or self._queued_control < 0 or self._pings_outstanding < 0:
            bad.append("negative counter (pending_total, queued control frames or outstanding pings)")
        for name, budget in (
            ("reset", self._reset_budget),
            ("control frame", self._control_budget),
            ("useless frame", self._useless_budget),
        ):
            if budget.tokens > budget.burst:
                bad.append(f"{name} budget holds {budget.tokens} tokens, above its burst {budget.burst}")
        if not 0 <= self._wu_credit <= WINDOW_UPDATE_CREDIT_MAX or self._wu_warrants_seen > self._wu_warrants:
            bad.append(f"WINDOW_UPDATE credit {self._wu_credit} out of [0, {WINDOW_UPDATE_CREDIT_MAX}]")
        if not self._hb_sid and self._hb_buf:
            bad.append("header block bytes left behind with no block in progress")
        if self._hb_frames > cfg.max_continuation_frames and not terminated:
            bad.append(f"{self._hb_frames} CONTINUATION frames taken, above {cfg.max_continuation_frames}")
        if terminated:
            if self._streams or self._ready or self.pending_total or self._inbuf:
                bad.append("terminated connection still holds streams, queued DATA or input")
        elif self._inbuf and len(self._inbuf) >= self._need:
            bad.append(f"{len(self._inbuf)} input bytes buffered, enough for a frame ({self._need}) yet unparsed")
        return bad

    # ---------------------------------------------------------------- commands

    def initiate_connection(self) -> None:
        """Queue the server connection preface (our SETTINGS frame)."""
        cfg = self.config
        settings = [
            (SETTINGS_MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams),
            (SETTINGS_INITIAL_WINDOW_SIZE, cfg.initial_window_size),
            (SETTINGS_MAX_FRAME_SIZE, cfg.max_frame_size),
            (SETTINGS_MAX_HEADER_LIST_SIZE, cfg.max_header_list_size),
            (SETTINGS_ENABLE_PUSH, 0),
        ]
        if cfg.header_table_size != DEFAULT_TABLE_SIZE:
            settings.append((SETTINGS_HEADER_TABLE_SIZE, cfg.header_table_size))
        payload = b"".join(_SETTING.pack(k, v) for k, v in settings)
        out = self._out
        out += _pack_header(len(payload) << 8 | SETTINGS, 0, 0)
        out += payload
        self._local_settings_pending = True
        increment = cfg.connection_window_size - self._conn_recv_window
        if increment > 0:
            self._write_window_update(0, increment)
            self._conn_recv_window += increment

    def data_to_send(self) -> bytes:
        """Take every byte queued for the peer (empty if none)."""
        self._queued_control = 0
        out = self._out
        if not out:
            return b""
        data = bytes(out)
        out.clear()
        return data

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
        self._write_headers(stream_id, block, end_stream)
        if end_stream:
            st.end_queued = True
            self._local_end(st)

    def send_data(self, stream_id: int, data: Bytes, end_stream: bool = False) -> None:
        """Queue DATA; it goes out as the stream and connection windows allow."""
        st = self._streams.get(stream_id)
        if st is None:
            return
        if st.end_queued:
            raise RuntimeError(f"stream {stream_id}: already ended")
        n = len(data)
        pending = st.pending
        if pending is None:
            if n <= st.send_window and n <= self._conn_send_window and n <= self._peer_max_frame:
                # Fast path: the whole message fits in one frame right now.
                self._sent_since_ping = True
                self._wu_warrants += 1
                out = self._out
                out += _pack_header(n << 8, FLAG_END_STREAM if end_stream else 0, stream_id)
                out += data
                st.send_window -= n
                self._conn_send_window -= n
                if end_stream:
                    st.end_queued = True
                    self._local_end(st)
                return
            st.pending = bytearray(data)
        else:
            pending += data
        self.pending_total += n
        if end_stream:
            st.pending_end = True
            st.end_queued = True
        self._flush_stream(st)

    def pending_bytes(self, stream_id: int) -> int:
        """DATA bytes queued on a stream and not yet sent for lack of window."""
        st = self._streams.get(stream_id)
        if st is None or st.pending is None:
            return 0
        return len(st.pending)

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
        self._write_rst(stream_id, error_code)
        self._remember(stream_id, RESET_BY_US)

    def acknowledge_received_data(self, stream_id: int, length: int) -> None:
        """The application consumed ``length`` flow-controlled bytes: reopen windows."""
        if length <= 0 or self._terminated:
            return
        self._refill_connection(length)
        st = self._streams.get(stream_id)
        if st is None or st.remote_closed:
            return  # no more DATA can come on it: only the connection window matters
        unacked = st.recv_unacked + length
        if unacked >= self._stream_refill:
            # Batched: one WINDOW_UPDATE per half window consumed (RFC 9113 6.9).
            increment = min(unacked, MAX_WINDOW - st.recv_window)
            st.recv_unacked = 0
            if increment > 0:
                st.recv_window += increment
                self._write_window_update(stream_id, increment)
        else:
            st.recv_unacked = unacked

    @property
    def connection_receive_window(self) -> int:
        """Bytes the peer may still send on the connection before our next WINDOW_UPDATE."""
        return self._conn_recv_window

    def grant_connection_window(self, increment: int) -> None:
        """Open the connection window by ``increment`` beyond what was consumed, so a
        stream the application favours can proceed while others' credit is withheld."""
        increment = min(increment, MAX_WINDOW - self._conn_recv_window)
        if increment > 0 and not self._terminated:
            self._conn_recv_window += increment
            self._write_window_update(0, increment)

    def ping(self, opaque: bytes) -> None:
        if len(opaque) != 8:
            raise ValueError("PING data must be 8 bytes")
        if self._terminated:
            return
        self._pings_outstanding += 1
        out = self._out
        out += _pack_header(8 << 8 | PING, 0, 0)
        out += opaque

    def goaway(self, last_stream_id: int, error_code: int = 0, debug_data: bytes = b"") -> None:
        """Send GOAWAY. Streams the peer opens above ``last_stream_id`` later are
        refused with RST_STREAM REFUSED_STREAM and never reported."""
        if self._terminated:
            return
        # A later GOAWAY may lower the last stream id, never raise it (RFC 9113 6.8).
        last = min(last_stream_id, self._goaway_last)
        self._goaway_last = last
        self._write_goaway(last, error_code, debug_data)

    # ------------------------------------------------------------------ input

    def receive_data(self, data: Bytes, now: float = 0.0) -> List[Event]:
        """Feed received bytes; return the events they complete, in order."""
        if self._terminated:
            return []
        events: List[Event] = []
        self._events = events
        self._now = now
        inbuf = self._inbuf
        if inbuf:
            inbuf += data
            if len(inbuf) < self._need:
                return events  # a large frame arriving in pieces: don't re-scan
            buf = bytes(inbuf)
            inbuf.clear()
        elif type(data) is bytes:
            buf = data
        else:
            buf = bytes(data)
        end = len(buf)
        pos = 0
        try:
            if not self._preface_ok:
                got = buf[: len(PREFACE)]
                if not PREFACE.startswith(got):
                    if got[:5] in (b"GET /", b"POST ", b"HEAD ", b"PUT /") or got[:4] == b"OPTI":
                        raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "HTTP/1.x request")
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "invalid preface")
                if len(got) < len(PREFACE):
                    self._inbuf += buf
                    self._need = len(PREFACE)
                    return events
                self._preface_ok = True
                pos = len(PREFACE)
            need = 9
            max_frame = self._max_inbound_frame
            handlers = self._handlers
            while end - pos >= 9:
                head, flags, sid = _unpack_header(buf, pos)
                length = head >> 8
                if length > max_frame:
                    raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds limit")
                fend = pos + 9 + length
                if fend > end:
                    need = 9 + length
                    break
                ftype = head & 0xFF
                sid &= 0x7FFFFFFF
                payload = buf[pos + 9 : fend]
                pos = fend
                if self._hb_sid and ftype != CONTINUATION:
                    # RFC 9113 6.10: a header block is contiguous.
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "frame inside a header block")
                if not self._settings_received and ftype != SETTINGS:
                    # RFC 9113 3.4: the preface is followed by a SETTINGS frame.
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "SETTINGS expected after preface")
                if ftype == DATA:
                    self._on_data(flags, sid, payload)
                elif ftype == HEADERS:
                    self._on_headers(flags, sid, payload)
                else:
                    handler = handlers.get(ftype)
                    if handler is None:
                        self._charge_useless("unknown frame types")  # RFC 9113 5.5: ignore
                    else:
                        handler(flags, sid, payload)
            if pos < end:
                self._inbuf += memoryview(buf)[pos:]
            self._need = need
        except ConnectionViolation as exc:
            self._fail(exc.code, exc.message)
        return events

    # DATA (RFC 9113 6.1)
    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(payload)
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
            pad = payload[0]
            if pad >= flow:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "DATA padding too long")
            data = payload[1 : flow - pad]
        else:
            data = payload
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
            st.received += len(data)
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

    # HEADERS (RFC 9113 6.2)
    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & (FLAG_PADDED | FLAG_PRIORITY):
            start = 0
            stop = len(payload)
            if flags & FLAG_PADDED:
                if stop == 0:
                    raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for padding")
                stop -= payload[0]
                start = 1
            self_dep = False
            if flags & FLAG_PRIORITY:
                if len(payload) < start + 5:
                    raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for priority")
                dep = _U32.unpack_from(payload, start)[0] & 0x7FFFFFFF
                self_dep = dep == sid
                start += 5
            if stop < start:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "HEADERS padding too long")
            fragment = payload[start:stop]
        else:
            fragment = payload
            self_dep = False
        end_stream = bool(flags & FLAG_END_STREAM)
        if flags & FLAG_END_HEADERS:
            self._header_block(sid, fragment, end_stream, self_dep)
            return
        if not fragment:
            self._charge_useless("empty header fragments")
        if len(fragment) > self.config.max_header_block_size:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        self._hb_sid = sid
        self._hb_buf = bytearray(fragment)
        self._hb_end_stream = end_stream
        self._hb_self_dep = self_dep
        self._hb_frames = 0

    # CONTINUATION (RFC 9113 6.10)
    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if not self._hb_sid or sid != self._hb_sid:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        self._hb_frames += 1
        if self._hb_frames > self.config.max_continuation_frames:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        buf = self._hb_buf
        buf += payload
        if len(buf) > self.config.max_header_block_size:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & FLAG_END_HEADERS:
            self._hb_sid = 0
            self._hb_buf = bytearray()
            self._header_block(sid, bytes(buf), self._hb_end_stream, self._hb_self_dep)
        elif not payload:
            self._charge_useless("empty header fragments")

    def _decode(self, block: bytes) -> List[Tuple[bytes, bytes]]:
        """Decode a whole block. Raises HeaderListTooLarge (after decoding all of it,
        so the connection can go on) or a connection error for invalid HPACK."""
        try:
            return self._decoder.decode(block)
        except hpack_decoder.HPACKError as exc:
            raise ConnectionViolation(ErrorCode.COMPRESSION_ERROR, f"HPACK decoding failed: {exc}") from None
        finally:
            if self._request_cache and not self._decoder.last_block_read_only:
                self._request_cache.clear()  # cached results may name old table entries

    def _header_block(self, sid: int, block: bytes, end_stream: bool, self_dep: bool) -> None:
        st = self._streams.get(sid)
        if st is not None:
            try:
                raw = self._decode(block)
            except hpack_decoder.HeaderListTooLarge:
                self._stream_error(sid, ErrorCode.ENHANCE_YOUR_CALM)
                return
            if st.remote_closed:
                self._stream_error(sid, ErrorCode.STREAM_CLOSED)
            elif self_dep:
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            elif not end_stream:
                # RFC 9113 8.1: a second header block is trailers, which end the stream.
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            else:
                headers = self._check_trailers(raw)
                if headers is None:
                    self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
                elif self._over_list_size(headers):
                    self._stream_error(sid, ErrorCode.ENHANCE_YOUR_CALM)
                elif st.content_length >= 0 and st.received != st.content_length:
                    self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
                else:
                    self._events.append(TrailersReceived(sid, headers))
                    st.remote_closed = True
                    if st.local_closed:
                        self._close(st)
            return
        if not sid & 1:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "even stream id from client")
        if sid <= self._highest_id:
            how = self._recent.get(sid)
            if how is None:
                if self._was_skipped(sid):
                    # RFC 9113 5.1.1: new stream ids must increase.
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "stream id not increasing")
                how = ENDED  # opened once, closed, and forgotten since
            if how == ENDED:
                # RFC 9113 5.1, "closed": frames after END_STREAM was received.
                raise ConnectionViolation(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
            try:
                self._decode(block)  # keep the HPACK table in step
            except hpack_decoder.HeaderListTooLarge:
                pass
            if how == RESET_BY_PEER:
                self._charge_useless("frames on closed streams")
                self._stream_error(sid, ErrorCode.STREAM_CLOSED, report=False, charge=False)
            return
        if sid > self._highest_id + 2:
            skipped = self._skipped
            skipped.append((self._highest_id + 1, sid - 1))
            if len(skipped) > SKIPPED_RANGES_LIMIT:
                del skipped[0]
        self._highest_id = sid
        result = self._request_cache.get(block)
        if result is None:
            try:
                raw = self._decode(block)
            except hpack_decoder.HeaderListTooLarge as exc:
                self._oversized_request(sid, exc.size, end_stream)
                return
            result = self._check_request(raw)
            if (
                result is not None
                and result[1] <= REQUEST_CACHE_MAX_LIST
                and len(block) <= REQUEST_CACHE_MAX_BLOCK
                and self._decoder.last_block_read_only
            ):
                cache = self._request_cache
                if len(cache) >= REQUEST_CACHE_ENTRIES:
                    del cache[next(iter(cache))]
                cache[block] = result
        if sid > self._goaway_last or len(self._streams) >= self.config.max_concurrent_streams:
            # RFC 9113 5.1.2 / 6.8: refused streams are safe to retry; not reported.
            self._stream_error(sid, ErrorCode.REFUSED_STREAM, report=False)
            return
        if self_dep or result is None:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            return
        headers, size, content_length = result
        if headers:
            headers = list(headers)  # each event owns its list
        if size > self.config.max_header_list_size:
            self._oversized_request(sid, size, end_stream)
            return
        if end_stream and content_length > 0:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)  # RFC 9113 8.1.1
            return
        st = _Stream(sid, self._peer_initial_window, self._local_initial_window)
        st.content_length = content_length
        st.remote_closed = end_stream
        self._streams[sid] = st
        self._wu_warrants += 1
        self.last_stream_id = sid
        self._events.append(RequestReceived(sid, headers, end_stream))

    def _oversized_request(self, sid: int, size: int, end_stream: bool) -> None:
        """A request over MAX_HEADER_LIST_SIZE: open the stream so it can be answered
        (gRPC: RESOURCE_EXHAUSTED), and charge it like a reset, so that a peer
        repeating it ends with ENHANCE_YOUR_CALM on the connection."""
        if sid > self._goaway_last or len(self._streams) >= self.config.max_concurrent_streams:
            self._stream_error(sid, ErrorCode.REFUSED_STREAM, report=False)
            return
        if not self._reset_budget.take(self._now):
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many oversized header lists")
        st = _Stream(sid, self._peer_initial_window, self._local_initial_window)
        st.remote_closed = end_stream
        self._streams[sid] = st
        self._wu_warrants += 1
        self.last_stream_id = sid
        self._events.append(RequestHeadersTooLarge(sid, size, self.config.max_header_list_size, end_stream))

    def _check_request(self, raw: List[Tuple[bytes, bytes]]) -> Tuple[Headers, int, int] | None:
        """RFC 9113 8.2 and 8.3.1. Returns (headers, list size, content-length or -1),
        or None if the request is malformed."""
        headers: Headers = []
        append = headers.append
        names: List[bytes] = []
        values: List[bytes] = []
        size = 32 * len(raw)
        method = scheme = path = authority = None
        regular = False
        pseudo = 0
        content_length = -1
        for name, value in raw:
            size += len(name) + len(value)
            names.append(name)
            values.append(value)
            if name[:1] == b":":
                if regular:
                    return None  # pseudo-header after a regular field
                pseudo += 1
                if name == b":method":
                    if method is not None:
                        return None
                    method = value
                elif name == b":path":
                    if path is not None:
                        return None
                    path = value
                elif name == b":scheme":
                    if scheme is not None:
                        return None
                    scheme = value
                elif name == b":authority":
                    if authority is not None:
                        return None
                    authority = value
                else:
                    return None  # unknown, or a response pseudo-header
            else:
                regular = True
                if not name or name in _CONNECTION_HEADERS:
                    return None
                if name == b"te":
                    if value != b"trailers":
                        return None
                elif name == b"content-length":
                    if not value.isdigit() or (content_length >= 0 and content_length != int(value)):
                        return None
                    content_length = int(value)
            append((name.decode("latin-1"), value.decode("latin-1")))
        if not _fields_ok(names, values, pseudo):
            return None
        if _padded_values(values):
            headers = [(name, value.strip(" \t")) for name, value in headers]
        if method is None:
            return None
        if method == b"CONNECT":
            # RFC 9113 8.5: CONNECT carries only :method and :authority.
            if scheme is not None or path is not None or authority is None:
                return None
        elif scheme is None or not path:
            return None
        return headers, size, content_length

    def _check_trailers(self, raw: List[Tuple[bytes, bytes]]) -> Headers | None:
        """RFC 9113 8.1: trailers carry no pseudo-headers."""
        names: List[bytes] = []
        values: List[bytes] = []
        headers: Headers = []
        for name, value in raw:
            if not name or name[:1] == b":" or name in _CONNECTION_HEADERS:
                return None
            if name == b"te" and value != b"trailers":
                return None
            names.append(name)
            values.append(value)
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if raw and not _fields_ok(names, values, 0):
            return None
        if raw and _padded_values(values):
            headers = [(name, value.strip(" \t")) for name, value in headers]
        return headers

    def _over_list_size(self, headers: Headers) -> bool:
        size = 0
        for name, value in headers:
            size += len(name) + len(value) + 32
        return size > self.config.max_header_list_size

    # PRIORITY (RFC 9113 6.3): parsed and ignored.
    def _on_priority(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        self._charge_useless("PRIORITY frames")
        if len(payload) != 5:
            self._stream_error(sid, ErrorCode.FRAME_SIZE_ERROR, report=sid in self._streams)
        elif _U32.unpack_from(payload)[0] & 0x7FFFFFFF == sid:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR, report=sid in self._streams)

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
        self._events.append(StreamReset(sid, _U32.unpack(payload)[0], True))

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
        length = len(payload)
        if length % 6:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        self._settings_received = True
        self._charge_control()
        initial_window = self._peer_initial_window
        for offset in range(0, length, 6):
            ident, value = _SETTING.unpack_from(payload, offset)
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionViolation(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
                initial_window = value
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if not MIN_MAX_FRAME_SIZE <= value <= MAX_MAX_FRAME_SIZE:
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "invalid MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif ident in (
                SETTINGS_ENABLE_PUSH,
                SETTINGS_ENABLE_CONNECT_PROTOCOL,
                SETTINGS_NO_RFC7540_PRIORITIES,
            ):
                if value > 1:
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, f"invalid value for setting {ident}")
            elif ident == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_concurrent_streams = value
            elif ident == SETTINGS_MAX_HEADER_LIST_SIZE:
                self.peer_max_header_list_size = value
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
        out += _pack_header(SETTINGS, FLAG_ACK, 0)
        if delta > 0:
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
            self._police_ping()
        out = self._out
        out += _pack_header(8 << 8 | PING, FLAG_ACK, 0)
        out += payload

    def _police_ping(self) -> None:
        now = self._now
        last = self._last_ping_received
        if self._sent_since_ping:
            self._sent_since_ping = False
            self._ping_strikes = 0
            last = None
        self._last_ping_received = now
        if last is None:
            return
        cfg = self.config
        interval = cfg.min_ping_interval if self._streams or cfg.permit_pings_without_calls else 7200.0
        if now - last >= interval:
            return
        self._ping_strikes += 1
        if self._ping_strikes > cfg.max_ping_strikes:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too_many_pings")

    # GOAWAY (RFC 9113 6.8)
    def _on_goaway(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) < 8:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY too short")
        if sid:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        last, code = _U32X2.unpack_from(payload)
        self._events.append(GoAwayReceived(code, last & 0x7FFFFFFF, payload[8:]))

    # WINDOW_UPDATE (RFC 9113 6.9)
    def _on_window_update(self, flags: int, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE length != 4")
        # See WINDOW_UPDATE_CREDIT.
        credit = self._wu_credit
        frames = self._wu_warrants
        if frames != self._wu_warrants_seen:
            credit += (frames - self._wu_warrants_seen) * WINDOW_UPDATE_CREDIT
            if credit > WINDOW_UPDATE_CREDIT_MAX:
                credit = WINDOW_UPDATE_CREDIT_MAX
            self._wu_warrants_seen = frames
        if credit > 0:
            self._wu_credit = credit - 1
        else:
            self._wu_credit = 0
            self._charge_useless("WINDOW_UPDATE frames")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if sid == 0:
            if increment == 0:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            window = self._conn_send_window + increment
            if window > MAX_WINDOW:
                raise ConnectionViolation(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
            self._conn_send_window = window
            if self._ready:
                self._flush_ready()
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
        self._write_goaway(self.last_stream_id, code, message.encode("utf-8"))
        self._events.append(ConnectionTerminated(code, message))

    def _stream_error(self, sid: int, code: ErrorCode, report: bool = True, charge: bool = True) -> None:
        """Stream error (RFC 9113 5.4.2): RST_STREAM and forget the stream."""
        st = self._streams.pop(sid, None)
        if st is not None:
            self._drop_pending(st)
        self._remember(sid, RESET_BY_US)
        self._write_rst(sid, code)
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

    def _drop_pending(self, st: _Stream) -> None:
        """The stream is gone: forget its queued DATA."""
        self._ready.pop(st.stream_id, None)
        if st.pending is not None:
            self.pending_total -= len(st.pending)
            st.pending = None

    def _remember(self, sid: int, how: int) -> None:
        recent = self._recent
        recent[sid] = how
        if len(recent) > RECENTLY_CLOSED_LIMIT:
            del recent[next(iter(recent))]

    def _was_skipped(self, sid: int) -> bool:
        """The peer skipped ``sid`` when it opened a higher stream (as far as the
        last SKIPPED_RANGES_LIMIT gaps tell)."""
        return any(first <= sid <= last for first, last in self._skipped)

    def _close(self, st: _Stream) -> None:
        del self._streams[st.stream_id]
        self._remember(st.stream_id, ENDED)

    def _local_end(self, st: _Stream) -> None:
        st.local_closed = True
        self._ready.pop(st.stream_id, None)
        if st.remote_closed:
            self._close(st)

    def _refill_connection(self, length: int) -> None:
        unacked = self._conn_unacked + length
        # Batched to one WINDOW_UPDATE per half window consumed, and also sent when
        # less than half the window is open to the peer: when the application
        # withholds some streams' credit, what it does give back must not wait.
        if unacked >= self._conn_refill or self._conn_recv_window < self._conn_refill:
            increment = min(unacked, MAX_WINDOW - self._conn_recv_window)
            self._conn_unacked = 0
            if increment > 0:
                self._conn_recv_window += increment
                self._write_window_update(0, increment)
        else:
            self._conn_unacked = unacked

    def _write_window_update(self, sid: int, increment: int) -> None:
        out = self._out
        out += _pack_header(4 << 8 | WINDOW_UPDATE, 0, sid)
        out += _U32.pack(increment)

    def _write_rst(self, sid: int, code: int) -> None:
        out = self._out
        out += _pack_header(4 << 8 | RST_STREAM, 0, sid)
        out += _U32.pack(code)

    def _write_goaway(self, last: int, code: int, debug: bytes) -> None:
        out = self._out
        out += _pack_header((8 + len(debug)) << 8 | GOAWAY, 0, 0)
        out += _U32X2.pack(last, code)
        out += debug

    def _write_headers(self, sid: int, block: bytes, end_stream: bool) -> None:
        self._sent_since_ping = True
        out = self._out
        flags = FLAG_END_STREAM if end_stream else 0
        n = len(block)
        max_frame = self._peer_max_frame
        if n <= max_frame:
            out += _pack_header(n << 8 | HEADERS, flags | FLAG_END_HEADERS, sid)
            out += block
            return
        # RFC 9113 4.3: a block larger than a frame continues in CONTINUATION frames.
        out += _pack_header(max_frame << 8 | HEADERS, flags, sid)
        out += block[:max_frame]
        pos = max_frame
        while pos < n:
            chunk = block[pos : pos + max_frame]
            pos += len(chunk)
            last = FLAG_END_HEADERS if pos >= n else 0
            out += _pack_header(len(chunk) << 8 | CONTINUATION, last, sid)
            out += chunk

    def _flush_stream(self, st: _Stream, one_frame: bool = False) -> None:
        """Send queued DATA (then queued trailers) as windows allow. A stream left
        waiting on the connection window joins the round-robin ``_ready`` queue."""
        pending = st.pending
        assert pending is not None
        out = self._out
        sid = st.stream_id
        sent_end = False
        while pending:
            size = len(pending)
            if size > st.send_window:
                size = st.send_window
            if size > self._conn_send_window:
                size = self._conn_send_window
            if size > self._peer_max_frame:
                size = self._peer_max_frame
            if size <= 0:
                break
            last = size == len(pending)
            sent_end = last and st.pending_end and st.trailers is None
            if last or size >= WINDOW_UPDATE_SMALL_FRAME:
                self._wu_warrants += 1
            out += _pack_header(size << 8, FLAG_END_STREAM if sent_end else 0, sid)
            out += pending[:size]
            self._sent_since_ping = True
            del pending[:size]
            self.pending_total -= size
            st.send_window -= size
            self._conn_send_window -= size
            if one_frame:
                break
        if pending:
            if st.send_window > 0:
                self._ready[sid] = st
            return
        st.pending = None
        self._ready.pop(sid, None)
        trailers = st.trailers
        if trailers is not None:
            st.trailers = None
            self._write_headers(sid, trailers, st.trailers_end)
            if st.trailers_end:
                self._local_end(st)
        elif st.pending_end:
            if not sent_end:  # queue was empty: END_STREAM on an empty frame
                out += _pack_header(0, FLAG_END_STREAM, sid)
            self._local_end(st)

    def _flush_ready(self) -> None:
        """Round robin, one frame per stream per turn, while the connection window
        lasts: no stream starves behind a big one."""
        ready = self._ready
        while ready and self._conn_send_window > 0:
            for sid in list(ready):
                st = ready.pop(sid)
                self._flush_stream(st, one_frame=True)
                if self._conn_send_window <= 0:
                    break
