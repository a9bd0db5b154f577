"""Fuzz targets for puregrpc's sans-I/O layers, with the invariants checked on every input.

Every target is a plain function ``target(data: bytes) -> None`` that returns normally
for an input the code under test handled correctly and raises ``InvariantViolation``
(or lets an unexpected exception escape) when it did not. They run the same way under
atheris (``fuzz/run.py``, coverage-guided) and without it (``tests/fuzz``: seed corpus,
regressions and random inputs), on CPython or PyPy.

Targets (``TARGETS`` maps the names used by ``fuzz/run.py`` and the corpora):

* ``h2_raw``: arbitrary bytes into the server-side HTTP/2 engine, after a valid client
  preface (and SETTINGS) or with none, cut into chunks at random points; driven as the
  server drives it (data acknowledged, streams answered with headers, data, trailers,
  resets, PINGs and GOAWAYs, output sometimes left unread).
* ``h2_frames``: structure-aware: well-formed frames of every type in any order, flags
  and stream ids from a small set that hits the interesting cases, HEADERS built with
  the ``hpack`` library's Encoder from header lists that are valid, almost valid, or
  not, split into CONTINUATION frames, with padding and priority fields.
* ``hpack``: the HPACK decoder on blocks of arbitrary bytes (a sequence of blocks on
  one decoder, so the dynamic table carries over), checked against the ``hpack``
  library's decoder, plus round trips of header lists encoded with ``hpack.Encoder``.
* ``grpc_messages``: ``MessageDecoder`` (5-byte length-prefixed messages, with a size
  limit) fed in random pieces, as bytes or (odd seeds) as views (``feed_pieces``),
  checked against a one-shot reference parse.
* ``grpc_request``: ``parse_request`` on header lists, both arbitrary ones (non-empty
  names, as the engine guarantees) and ones that came through the engine.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, TypeVar

import hpack

from puregrpc._h2 import hpack_decoder
from puregrpc._h2.connection import PREFACE, H2Config, H2Connection
from puregrpc._h2.errors import ErrorCode
from puregrpc._h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcked,
    RequestHeadersTooLarge,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from puregrpc._h2.hpack_encoder import encode_headers
from puregrpc._protocol import (
    MessageDecoder,
    ProtocolViolation,
    RequestHead,
    RequestRejected,
    frame_message,
    parse_request,
    read_request,
)

T = TypeVar("T")


class InvariantViolation(AssertionError):
    """The code under test broke one of the invariants this module checks."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantViolation(message)


class Source:
    """Deterministic choices drawn from fuzz bytes (zeros once they run out), like
    atheris' FuzzedDataProvider but in pure Python so PyPy and CI can replay inputs."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def uint(self, nbytes: int) -> int:
        value = 0
        for _ in range(nbytes):
            value = value << 8 | self.byte()
        return value

    def below(self, n: int) -> int:
        return self.byte() % n if n <= 256 else self.uint(4) % n

    def flag(self) -> bool:
        return bool(self.byte() & 1)

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def blob(self, max_len: int = 64) -> bytes:
        return self.take(self.below(max_len + 1))

    def pick(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]


# ---------------------------------------------------------------------------------
# The HTTP/2 engine, driven as the server drives it.

RESPONSE_BLOCK = encode_headers([(b":status", b"200"), (b"content-type", b"application/grpc")])
TRAILERS_BLOCK = encode_headers([(b"grpc-status", b"0")])
# Larger than any peer's frame: goes out as HEADERS + CONTINUATION.
BIG_TRAILERS_BLOCK = encode_headers([(b"grpc-status", b"0"), (b"x-big", b"b" * 40000)])
TRAILERS_ONLY_BLOCK = encode_headers(
    [(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"12")]
)

# Frame types of RFC 9113 the output may hold; anything else is an invariant violation.
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
_OUTPUT_TYPES = {_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION}
_HEADER = struct.Struct(">IBI")

MAX_MAX_FRAME_SIZE = (1 << 24) - 1  # RFC 9113 4.2
RECENTLY_CLOSED_LIMIT = 1024  # closed stream ids the engine may remember (stream.py)

# Engine-generated output allowed per input byte (SETTINGS/PING ACKs echo the frame;
# a 9-byte DATA on a closed stream may cost an RST_STREAM and a WINDOW_UPDATE).
OUTPUT_PER_INPUT_BYTE = 3
OUTPUT_SLACK = 512  # GOAWAY with its debug text, a final flush


def small_config() -> H2Config:
    """Limits small enough that a short input reaches every one of them."""
    return H2Config(
        max_concurrent_streams=3,
        initial_window_size=300,
        connection_window_size=65535,
        max_header_list_size=400,
        header_table_size=96,
        reset_rate=5.0,
        reset_burst=12,
        control_frame_rate=5.0,
        control_frame_burst=12,
        useless_frame_rate=5.0,
        useless_frame_burst=12,
        max_queued_control_frames=8,
        min_ping_interval=1.0,
        max_ping_strikes=2,
        max_continuation_frames=4,
    )


def config_for(choice: int) -> H2Config:
    if choice == 0:
        return H2Config()
    if choice == 1:
        return small_config()
    cfg = small_config()
    cfg.header_table_size = 0
    cfg.initial_window_size = 0
    cfg.permit_pings_without_calls = True
    cfg.max_frame_size = 16385
    return cfg


def parse_output(data: bytes) -> List[Tuple[int, int, int, bytes]]:
    """Split engine output into frames; it must be a sequence of whole, known frames."""
    frames = []
    pos = 0
    while pos < len(data):
        check(len(data) - pos >= 9, f"output ends inside a frame header at {pos}")
        head, flags, sid = _HEADER.unpack_from(data, pos)
        length, ftype = head >> 8, head & 0xFF
        check(length <= MAX_MAX_FRAME_SIZE, f"output frame of {length} bytes")
        check(pos + 9 + length <= len(data), "output ends inside a frame")
        check(ftype in _OUTPUT_TYPES, f"output frame of unknown type {ftype}")
        check(not sid & 0x80000000, "reserved bit set in output")
        frames.append((ftype, flags, sid, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return frames


class _StreamModel:
    __slots__ = (
        "acked",
        "closed",
        "decoder",
        "deferred_ack",
        "failed",
        "headers_sent",
        "local_ended",
        "recv_flow",
        "remote_ended",
    )

    def __init__(self, limit: int) -> None:
        self.decoder = MessageDecoder(limit)
        self.local_ended = False
        self.remote_ended = False
        self.closed = False  # reset (either side)
        self.failed = False  # a bad gRPC message: the application resets the stream
        self.headers_sent = False
        self.recv_flow = 0
        self.acked = 0
        self.deferred_ack = 0


class Driver:
    """Plays the application above one server-side H2Connection and checks, after
    every ``receive_data``, what the engine reported and queued against a model."""

    MAX_MESSAGE = 1024

    def __init__(self, config: H2Config, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.conn = H2Connection(config)
        self.conn.initiate_connection()
        self.now = 0.0
        self.streams: Dict[int, _StreamModel] = {}
        self.last_request = 0
        self.terminated = False
        self.pings_sent = 0
        self.pings_acked = 0
        self.unread = bytearray()  # output the "peer" has not read yet
        self.app_resets_unread = 0
        self.app_pings_unread = 0
        self.conn_unacked = 0  # reported flow the application has not acknowledged
        self.goaway_sent = False
        self.drained = False
        self.check_state()
        self.take_output()

    # --------------------------------------------------------------- input side

    def feed(self, data: bytes) -> None:
        conn = self.conn
        was_terminated = conn.terminated
        if was_terminated:
            self.take_output()  # the GOAWAY, if the peer had not read it yet
        pending_before = conn.pending_total
        drained = self.drained  # nothing the application queued is still unread
        events = conn.receive_data(data, self.now)  # no exception may escape
        if was_terminated:
            check(events == [], "events after ConnectionTerminated")
            check(not conn.data_to_send(), "output after ConnectionTerminated")
            return
        self.check_events(events)
        self.check_state()
        if self.rng.random() < 0.8 and drained:
            produced = self.take_output()
            engine_bytes = 0
            data_bytes = 0
            for ftype, _flags, _sid, payload in produced:
                if ftype == _DATA:
                    data_bytes += len(payload)
                elif ftype not in (_HEADERS, _CONTINUATION):
                    engine_bytes += 9 + len(payload)
            check(data_bytes <= pending_before, f"{data_bytes} DATA bytes sent with {pending_before} queued")
            # Application-made frames (its PINGs, resets, GOAWAYs) were already taken
            # before this call, so what is here was provoked by ``data``.
            bound = OUTPUT_PER_INPUT_BYTE * len(data) + OUTPUT_SLACK
            check(engine_bytes <= bound, f"{engine_bytes} control bytes out for {len(data)} bytes in")
            self.check_memory(len(data))
        if not self.terminated:
            self.respond(events)
            self.drained = False
            self.check_state()
            if self.rng.random() < 0.8:
                self.take_output()

    def check_events(self, events: List[Event]) -> None:
        cfg = self.config
        for index, event in enumerate(events):
            check(not self.terminated, f"event after ConnectionTerminated: {event!r}")
            if isinstance(event, (RequestReceived, RequestHeadersTooLarge)):
                sid = event.stream_id
                check(sid & 1 == 1, f"request on even stream {sid}")
                check(sid > self.last_request, f"request on stream {sid} after {self.last_request}")
                self.last_request = sid
                model = _StreamModel(self.MAX_MESSAGE)
                model.remote_ended = event.end_stream
                self.streams[sid] = model
                if isinstance(event, RequestReceived):
                    check_request_headers(event.headers, cfg.max_header_list_size)
                    check_parse_request(event.headers)
                    check_read_request(event)
                else:
                    check(event.size > event.limit == cfg.max_header_list_size, f"bad {event!r}")
            elif isinstance(event, DataReceived):
                model = self.live(event.stream_id, event)
                check(event.flow_length >= len(event.data), f"flow_length below data: {event!r}")
                # Several DATA frames in a row are one event, but only unpadded ones: a
                # padded frame is reported alone, so its flow fits one frame.
                check(
                    event.flow_length == len(event.data) or event.flow_length <= cfg.max_frame_size,
                    f"padded flow_length past a frame: {event!r}",
                )
                model.recv_flow += event.flow_length
                self.conn_unacked += event.flow_length
                window = max(cfg.initial_window_size, 65535)
                check(
                    model.recv_flow - model.acked <= window,
                    f"stream {event.stream_id}: {model.recv_flow - model.acked} unacknowledged > window {window}",
                )
                check(
                    self.conn_unacked <= cfg.connection_window_size,
                    f"connection: {self.conn_unacked} unacknowledged > {cfg.connection_window_size}",
                )
                if not model.failed:
                    try:
                        model.decoder.feed(bytes(event.data))
                        check_decoder_bound(model.decoder, self.MAX_MESSAGE)
                    except ProtocolViolation:
                        model.failed = True  # the application resets the call (respond)
                if event.end_stream:
                    model.remote_ended = True
            elif isinstance(event, TrailersReceived):
                model = self.live(event.stream_id, event)
                for name, _value in event.headers:
                    check(bool(name) and name[0] != ":", f"pseudo-header in trailers: {event!r}")
                model.remote_ended = True
            elif isinstance(event, StreamReset):
                model_or_none = self.streams.get(event.stream_id)
                if event.remote:
                    check(model_or_none is not None, f"peer reset of an unreported stream: {event!r}")
                if model_or_none is not None:
                    model_or_none.closed = True
                    model_or_none.remote_ended = True
                    model_or_none.local_ended = True
            elif isinstance(event, WindowUpdated):
                check(event.stream_id == 0 or event.stream_id in self.streams, f"{event!r} for an unknown stream")
            elif isinstance(event, PingAcked):
                self.pings_acked += 1
                check(self.pings_acked <= self.pings_sent, "PingAcked for a PING never sent")
                check(len(event.data) == 8, f"{event!r}")
            elif isinstance(event, GoAwayReceived):
                check(0 <= event.last_stream_id < 1 << 31, f"{event!r}")
            elif isinstance(event, ConnectionTerminated):
                check(index == len(events) - 1, "events after ConnectionTerminated in one batch")
                check(ErrorCode(event.error_code) is not None, f"{event!r}")
                self.terminated = True
            else:
                raise InvariantViolation(f"unknown event {event!r}")
        if self.terminated:
            check(self.conn.terminated, "ConnectionTerminated reported but the engine is not terminated")
            check(self.conn.open_stream_count == 0, "streams left open after ConnectionTerminated")
        else:
            check(not self.conn.terminated, "engine terminated without ConnectionTerminated")

    def live(self, sid: int, event: Event) -> _StreamModel:
        model = self.streams.get(sid)
        check(model is not None, f"{event!r} on a stream never reported")
        assert model is not None
        check(not model.closed, f"{event!r} on a reset stream")
        check(not model.remote_ended, f"{event!r} after the peer ended the stream")
        return model

    # -------------------------------------------------------------- application

    def respond(self, events: List[Event]) -> None:
        conn = self.conn
        rng = self.rng
        for event in events:
            if isinstance(event, DataReceived):
                model = self.streams[event.stream_id]
                if rng.random() < 0.85:
                    self.ack(event.stream_id, model, event.flow_length)
                else:
                    model.deferred_ack += event.flow_length
            elif isinstance(event, (RequestReceived, RequestHeadersTooLarge)):
                self.answer(event.stream_id, rng.randrange(6))
            elif isinstance(event, StreamReset):
                # Its data is acknowledged all the same (the connection window).
                model_or_none = self.streams.get(event.stream_id)
                if model_or_none is not None and model_or_none.deferred_ack:
                    self.ack(event.stream_id, model_or_none, model_or_none.deferred_ack)
                    model_or_none.deferred_ack = 0
        # Some deferred acknowledgements, and some work on streams left open.
        for sid, model in list(self.streams.items()):
            if model.deferred_ack and rng.random() < 0.5:
                length, model.deferred_ack = model.deferred_ack, 0
                self.ack(sid, model, length)
            if not model.local_ended and not model.closed and rng.random() < 0.2:
                self.answer(sid, rng.randrange(6))
        if rng.random() < 0.05:
            conn.ping(rng.getrandbits(64).to_bytes(8, "big"))
            self.pings_sent += 1
        if rng.random() < 0.02:
            conn.goaway(self.last_request, 0, b"fuzz")
            self.goaway_sent = True

    def ack(self, sid: int, model: _StreamModel, length: int) -> None:
        model.acked += length
        self.conn_unacked -= length
        if self.rng.random() < 0.5:
            self.conn.acknowledge_received_data(sid, length)
        else:  # the server credits the connection and the stream apart
            self.conn.acknowledge_connection_data(length)
            self.conn.acknowledge_stream_data(sid, length)

    def answer(self, sid: int, how: int) -> None:
        conn = self.conn
        model = self.streams[sid]
        if model.closed:
            return
        if model.failed:
            how = 2  # as the server does on a bad message
        elif model.local_ended:
            return
        if how in (0, 3, 4) and not model.headers_sent:
            conn.send_headers(sid, RESPONSE_BLOCK)
            model.headers_sent = True
        if how == 0:  # a whole unary answer
            conn.send_data(sid, frame_message(b"x" * self.rng.randrange(64)))
            conn.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
            model.local_ended = True
        elif how == 1:  # Trailers-Only, or trailers (sometimes larger than a frame)
            if model.headers_sent:
                block = BIG_TRAILERS_BLOCK if self.rng.random() < 0.2 else TRAILERS_BLOCK
            else:
                block = TRAILERS_ONLY_BLOCK
            conn.send_headers(sid, block, end_stream=True)
            model.local_ended = True
        elif how == 2:
            conn.reset_stream(sid, ErrorCode.CANCEL)
            self.app_resets_unread += 1
            model.closed = model.local_ended = True
        elif how == 3:  # more than the windows allow: queued DATA, then trailers behind it
            conn.send_data(sid, b"y" * self.rng.choice((1, 70000, 200000)))
            if self.rng.random() < 0.5:
                conn.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
            else:
                conn.send_data(sid, b"", end_stream=True)
            model.local_ended = True
        elif how == 4:
            conn.send_data(sid, b"z" * self.rng.randrange(40000))
        # 5: leave the stream alone for now

    # ------------------------------------------------------------------ checks

    def take_output(self) -> List[Tuple[int, int, int, bytes]]:
        """The peer reads: parse what was queued and bound the engine's own frames."""
        data = self.conn.data_to_send()
        frames = parse_output(data)
        controls = sum(1 for f in frames if f[0] == _RST or (f[0] in (_SETTINGS, _PING) and f[1] & 1))
        limit = self.config.max_queued_control_frames + 2 + self.app_resets_unread
        check(controls <= limit, f"{controls} control frames queued for an unread peer (limit {limit})")
        self.app_resets_unread = 0
        self.drained = True
        return frames

    def check_state(self) -> None:
        """The engine's own invariants, its streams against the model (public API
        only), and its memory."""
        conn = self.conn
        cfg = self.config
        found = conn.invariant_violations()
        check(not found, f"invariant_violations(): {found}")
        check(conn.terminated == self.terminated, "terminated without ConnectionTerminated")
        check(conn.open_stream_count <= cfg.max_concurrent_streams, "more open streams than allowed")
        known_open = 0
        queued = 0
        for sid, model in self.streams.items():
            is_open = conn.stream_is_open(sid)
            known_open += is_open
            queued += conn.pending_bytes(sid)
            if is_open:
                check(not model.closed, f"stream {sid} open after it was reset")
                check(conn.stream_remote_open(sid) == (not model.remote_ended), f"stream {sid}: remote state")
            elif not self.terminated and not model.closed:
                # Only END_STREAM both ways (ours may wait for window), a reset, or the
                # end of the connection close a stream; the application hears of each.
                check(model.remote_ended and model.local_ended, f"stream {sid} gone without a reset")
        check(known_open == conn.open_stream_count, "the engine holds streams it never reported")
        check(queued == conn.pending_total, f"pending_total {conn.pending_total} != {queued} queued on streams")
        check(conn.connection_receive_window >= 0 or self.terminated, "negative connection receive window")
        decoder = getattr(conn, "_decoder", None)  # the HPACK decoder, where the engine keeps it
        if isinstance(decoder, hpack_decoder.Decoder):
            check_decoder_state(decoder)

    def check_memory(self, last_input: int) -> None:
        """Everything the connection holds (bytes and strings reachable from it),
        less the DATA the application queued, within what its limits allow."""
        conn = self.conn
        cfg = self.config
        held, entries = reachable_size(conn)
        bound = (
            9
            + cfg.max_frame_size
            + len(PREFACE)  # a partial frame
            + cfg.max_header_block_size  # a header block in progress
            + 2 * max(cfg.header_table_size, 4096)  # HPACK dynamic table
            + 512 * (256 + 410)  # HPACK Huffman memo (strings up to 256 bytes)
            + 32 * (1024 + 2 * cfg.max_header_list_size)  # HPACK decoded-block cache
            + 16 * (512 + 2 * 4096)  # validated-request cache
            # request starts (fields kept by value, maybe no longer in the table)
            + 16 * (max(cfg.header_table_size, 4096) + 2 * 4096)
            + 32 * (1024 + max(cfg.header_table_size, 4096))  # HPACK indexed-prefix memo
            + 2 * last_input  # events of the last input, still referenced
            + 200 * conn.open_stream_count  # per stream: queued trailers, ids
            + 8192
        )
        check(
            held - conn.pending_total <= bound,
            f"connection holds {held} bytes ({conn.pending_total} queued), bound {bound}",
        )
        entry_bound = 4 * RECENTLY_CLOSED_LIMIT + 2 * 512 + 32 * 64 + 16 * 64 + 64 * cfg.max_concurrent_streams + 4096
        entry_bound += 16 * (512 + 64) + 32 * 1024  # request starts, indexed-prefix memo
        check(entries <= entry_bound, f"connection holds {entries} container entries, bound {entry_bound}")


def reachable_size(root: object) -> Tuple[int, int]:
    """Bytes of bytes/bytearray/str reachable from ``root`` through containers and
    puregrpc objects, and the number of container entries."""
    total = entries = 0
    seen: Set[int] = set()
    todo = deque([root])
    while todo:
        obj = todo.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (bytes, bytearray, str)):
            total += len(obj)
        elif isinstance(obj, memoryview):
            total += obj.nbytes
        elif isinstance(obj, dict):
            entries += len(obj)
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            entries += len(obj)
            todo.extend(obj)
        elif type(obj).__module__.startswith("puregrpc") and not isinstance(obj, H2Config):
            for name in getattr(obj, "__dict__", {}):
                todo.append(getattr(obj, name))
            for klass in type(obj).__mro__:
                for name in getattr(klass, "__slots__", ()):
                    if hasattr(obj, name):
                        todo.append(getattr(obj, name))
    return total, entries


def check_request_headers(headers: List[Tuple[str, str]], limit: int) -> None:
    """What RequestReceived promises: str pairs, pseudo-headers first, lowercase
    names, no connection-specific fields, a size within MAX_HEADER_LIST_SIZE."""
    size = 0
    seen_regular = False
    names = set()
    for name, value in headers:
        check(isinstance(name, str) and isinstance(value, str), f"non-str field {(name, value)!r}")
        check(bool(name), "empty header name")
        check(name == name.lower(), f"uppercase header name {name!r}")
        check(not any(c in value for c in "\r\n\x00"), f"CR, LF or NUL in value of {name!r}")
        check(value == value.strip(" \t"), f"untrimmed value of {name!r}")
        if name[0] == ":":
            check(not seen_regular, "pseudo-header after a regular field")
            check(name not in names, f"repeated pseudo-header {name}")
        else:
            seen_regular = True
            check(name not in ("connection", "keep-alive", "transfer-encoding", "upgrade"), name)
        names.add(name)
        size += len(name) + len(value) + 32
    check(":method" in names, "request without :method")
    check(size <= limit, f"request header list of {size} > {limit}")


def check_parse_request(headers: Sequence[Tuple[str, str]]) -> Optional[RequestHead]:
    """parse_request accepts or rejects with RequestRejected; nothing else escapes, and
    what it accepts is a well-formed gRPC request head."""
    try:
        head = parse_request(headers)
    except RequestRejected as exc:
        check(exc.http_status in (200, 400, 405, 415), f"rejected with HTTP {exc.http_status}")
        return None
    path = head.method
    check(path.startswith("/") and path.count("/") == 2 and not path.endswith("/"), f"accepted path {path!r}")
    check(head.content_type.startswith("application/grpc"), f"accepted {head.content_type!r}")
    check(head.timeout is None or head.timeout >= 0, f"timeout {head.timeout!r}")
    check(head.encoding != "identity", "identity encoding not normalised")
    for key, value in head.metadata:
        check(bool(key) and key[0] != ":", f"pseudo-header as metadata: {key!r}")
        check(key not in ("te", "content-type", "grpc-timeout", "grpc-encoding"), f"reserved key {key!r}")
        check(isinstance(value, bytes) == key.endswith("-bin"), f"metadata value type for {key!r}")
    return head


def _reading(read: Callable[[], RequestHead]) -> Tuple[Any, ...]:
    try:
        head = read()
    except RequestRejected as exc:
        return ("rejected", exc.http_status, exc.code, exc.message)
    return (
        "accepted",
        head.method,
        head.content_type,
        head.timeout,
        head.encoding,
        head.accept_encoding,
        head.metadata,
    )


def check_read_request(event: RequestReceived) -> None:
    """Reading a request through the memo it shares with the connection's other
    requests (the part it stands for read once) gives what parse_request gives."""
    check(0 <= event.memo_fields <= len(event.headers), f"memo_fields {event.memo_fields} of {len(event.headers)}")
    check((event.memo is None) == (event.memo_fields == 0), f"memo {event.memo!r} for {event.memo_fields} fields")
    shared = _reading(lambda: read_request(event.headers, event.memo, event.memo_fields))
    check(shared == _reading(lambda: parse_request(event.headers)), f"memo read {shared!r} for {event.headers!r}")


def check_decoder_bound(decoder: MessageDecoder, limit: int) -> None:
    buffered = decoder.buffered
    check(buffered < 5 + limit, f"MessageDecoder holds {buffered} bytes with a limit of {limit}")
    if buffered:
        check(0 < decoder.missing <= 5 + limit, f"missing {decoder.missing} with {buffered} buffered")
    else:
        check(decoder.missing == 0 and not decoder.partial, "missing bytes with nothing buffered")


def check_decoder_state(decoder: hpack_decoder.Decoder) -> None:
    table = decoder._table
    size = sum(len(n) + len(v) + 32 for n, v in table)
    check(size == decoder._table_size, f"HPACK table size {decoder._table_size} != {size}")
    check(size <= decoder._max_table_size, f"HPACK table of {size} > max {decoder._max_table_size}")
    check(len(decoder._huffman) <= 512 and len(decoder._blocks) <= 32, "HPACK caches unbounded")


def _chunks(rng: random.Random, data: bytes) -> List[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        n = rng.choice((1, 2, 9, 17, 64, 1000, len(data)))
        out.append(data[pos : pos + n])
        pos += n
    return out


def _run_stream(config: H2Config, rng: random.Random, stream: bytes) -> Driver:
    driver = Driver(config, rng)
    for chunk in _chunks(rng, stream):
        driver.feed(chunk)
        driver.now += rng.choice((0.0, 0.0, 0.001, 0.5, 3.0))
    if not driver.terminated:
        driver.feed(b"")
    driver.take_output()
    return driver


# Prefixes the raw target may put before the fuzz bytes.
CLIENT_SETTINGS = _HEADER.pack(0 << 8 | _SETTINGS, 0, 0)
CLIENT_SETTINGS_ACK = _HEADER.pack(_SETTINGS, 1, 0)
_PREFIXES = (b"", PREFACE, PREFACE + CLIENT_SETTINGS, PREFACE + CLIENT_SETTINGS + CLIENT_SETTINGS_ACK)


def h2_raw(data: bytes) -> None:
    """Byte 0: prefix (bits 0-1) and config (bits 2-3); byte 1: seed of the chunking
    and application choices; the rest goes to the engine as it is."""
    if len(data) < 2:
        return
    mode, seed = data[0], data[1]
    config = config_for((mode >> 2 & 3) % 3)
    _run_stream(config, random.Random(seed), _PREFIXES[mode & 3] + data[2:])


# ---------------------------------------------------------------------------------
# Structure-aware frames.

_NAMES = (
    ":method",
    ":scheme",
    ":path",
    ":authority",
    ":status",
    ":protocol",
    "content-type",
    "te",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "content-length",
    "connection",
    "user-agent",
    "x-meta",
    "x-bin",
    "Upper",
    "",
    "bad name",
    "x\x00y",
    "grpc-status",
)
_VALUES = (
    "POST",
    "GET",
    "CONNECT",
    "http",
    "/pkg.Service/Method",
    "/a/b/c",
    "",
    "/",
    "application/grpc",
    "application/grpc+proto",
    "text/html",
    "trailers",
    "gzip",
    "identity",
    "snappy",
    "1S",
    "99999999H",
    "5x",
    "0",
    "12",
    "-1",
    "AAEC",
    "@@@",
    " padded ",
    "a\r\nb",
    "nul\x00",
    "\xff\xfe",
    "x" * 300,
)
_GOOD_REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/pkg.Service/Method"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def _header_list(src: Source) -> List[Tuple[bytes, bytes]]:
    kind = src.below(4)
    if kind == 0:
        fields = list(_GOOD_REQUEST)
    elif kind == 1:  # the good request with some fields changed, added or removed
        fields = list(_GOOD_REQUEST)
        for _ in range(src.below(4)):
            op = src.below(3)
            if op == 0 and fields:
                del fields[src.below(len(fields))]
            elif op == 1:
                fields.insert(src.below(len(fields) + 1), (str(src.pick(_NAMES)), str(src.pick(_VALUES))))
            elif fields:
                i = src.below(len(fields))
                fields[i] = (fields[i][0], str(src.pick(_VALUES)))
    elif kind == 2:
        fields = [(str(src.pick(_NAMES)), str(src.pick(_VALUES))) for _ in range(src.below(8))]
    else:  # raw bytes names and values
        fields = [(src.blob(12).decode("latin-1"), src.blob(24).decode("latin-1")) for _ in range(src.below(6))]
    return [(n.encode("latin-1"), v.encode("latin-1")) for n, v in fields]


class FrameBuilder:
    def __init__(self, src: Source) -> None:
        self.src = src
        self.encoder = hpack.Encoder()
        self.next_sid = 1
        self.used: List[int] = []

    def stream_id(self) -> int:
        src = self.src
        choice = src.below(8)
        if choice == 0:
            return 0
        if choice in (1, 2, 3) and self.used:
            return self.used[-1 - src.below(min(len(self.used), 4))]
        if choice == 4:
            return src.uint(4) & 0x7FFFFFFF
        if choice == 5:
            return self.next_sid + 1  # even
        sid = self.next_sid
        self.next_sid += 2 * (1 + src.below(2))
        self.used.append(sid)
        return sid

    def block(self) -> bytes:
        src = self.src
        fields = _header_list(src)
        if src.below(8) == 0:
            self.encoder.header_table_size = src.pick((0, 64, 4096, 8192))
        try:
            return bytes(self.encoder.encode(fields, huffman=src.flag()))
        except Exception:  # the reference encoder refuses some inputs; send raw bytes instead
            return src.blob(32)

    def frame(self) -> bytes:
        src = self.src
        ftype = src.below(11)
        if ftype == 10:
            ftype = src.byte()  # unknown types too
        flags = src.byte() if src.below(4) == 0 else src.pick((0, 1, 4, 5, 8, 0x20, 0x25, 0x2D))
        assert isinstance(flags, int)
        sid = self.stream_id()
        if ftype == _DATA:
            payload = frame_message(src.blob(40)) if src.flag() else src.blob(200)
            if src.below(3) == 0:
                payload = payload * (1 + src.below(100))
            if src.below(16) == 0:  # a full frame: a few of them pass the windows
                payload = bytes(16384 - 9 * (flags & 8 and 1))
            if flags & 8:
                pad = src.byte()
                payload = bytes([pad]) + payload + b"\0" * pad
        elif ftype == _HEADERS:
            payload = self.block()
            if src.below(3) == 0 and len(payload) > 1:
                # Split into HEADERS + CONTINUATION frames (END_HEADERS on the last).
                cut = 1 + src.below(len(payload) - 1)
                first = self._headers_payload(flags & ~4, sid, payload[:cut])
                rest = _HEADER.pack(len(payload) - cut << 8 | _CONTINUATION, 4 if src.below(4) else 0, sid)
                return first + rest + payload[cut:]
            return self._headers_payload(flags, sid, payload)
        elif ftype == 2:  # PRIORITY
            payload = struct.pack(">IB", src.pick((sid, 0, 1, 3)) | (src.flag() << 31), src.byte())
            if src.below(8) == 0:
                payload = payload[: src.below(5)]
        elif ftype == _RST:
            payload = struct.pack(">I", src.below(15)) if src.below(8) else src.blob(6)
        elif ftype == _SETTINGS:
            pairs = [(src.below(10), src.pick((0, 1, 2, 100, 16384, 65535, 1 << 24, (1 << 31) - 1, 1 << 31)))]
            pairs += [(src.below(10), src.uint(4)) for _ in range(src.below(3))]
            payload = b"".join(struct.pack(">HI", k, v) for k, v in pairs)
            if flags & 1 and src.flag():
                payload = b""
            if src.below(8) == 0:
                payload = payload[:-1]
        elif ftype == 5:  # PUSH_PROMISE
            payload = struct.pack(">I", self.next_sid + 1) + self.block()
        elif ftype == _PING:
            payload = src.take(8).ljust(8, b"\0") if src.below(8) else src.blob(10)
        elif ftype == _GOAWAY:
            payload = struct.pack(">II", src.uint(4), src.below(15)) + src.blob(16)
        elif ftype == _WINDOW_UPDATE:
            inc = src.pick((0, 1, 100, 65535, 1 << 20, (1 << 31) - 1, 1 << 31))
            payload = struct.pack(">I", inc) if src.below(8) else src.blob(6)
        elif ftype == _CONTINUATION:
            payload = self.block()
        else:
            payload = src.blob(32)
        return _HEADER.pack(len(payload) << 8 | ftype, flags, sid) + payload

    def _headers_payload(self, flags: int, sid: int, block: bytes) -> bytes:
        src = self.src
        prefix = b""
        suffix = b""
        if flags & 8:
            pad = src.below(8)
            prefix = bytes([pad if src.below(8) else 255])
            suffix = b"\0" * pad
        if flags & 0x20:
            dep = sid if src.below(8) == 0 else src.below(8)
            prefix += struct.pack(">IB", dep, src.byte())
        payload = prefix + block + suffix
        return _HEADER.pack(len(payload) << 8 | _HEADERS, flags, sid) + payload


def h2_frames(data: bytes) -> None:
    src = Source(data)
    mode = src.byte()
    config = config_for(mode % 3)
    rng = random.Random(src.byte())
    builder = FrameBuilder(src)
    stream = PREFACE
    if not mode & 0x80:
        stream += CLIENT_SETTINGS
    while src.remaining and len(stream) < 1 << 20:
        stream += builder.frame()
    _run_stream(config, rng, stream)


# ---------------------------------------------------------------------------------
# HPACK decoder, against the hpack library.


def _reference_decode(ref: hpack.Decoder, block: bytes) -> Optional[List[Tuple[bytes, bytes]]]:
    try:
        return [(bytes(n), bytes(v)) for n, v in ref.decode(block, raw=True)]
    except Exception:
        return None


def hpack_target(data: bytes) -> None:
    src = Source(data)
    table = src.pick((0, 32, 256, 4096))
    limit = src.pick((64, 1024, 1 << 16))
    assert isinstance(table, int) and isinstance(limit, int)
    ours = hpack_decoder.Decoder(table, limit)
    ref = hpack.Decoder()
    ref.header_table_size = table
    ref.max_allowed_table_size = table
    ref.max_header_list_size = 1 << 30  # the reference gives the full list; we compare below the limit
    in_step = True
    while src.remaining:
        if src.below(4) == 0:
            # Round trip: what the reference encoder makes we decode to the same list
            # (on a fresh pair of decoder and encoder: the tables must stay in step).
            enc = hpack.Encoder()
            enc.header_table_size = table
            dec = hpack_decoder.Decoder(table, 1 << 20)
            for _ in range(1 + src.below(3)):
                fields = [(src.blob(8).lower() or b"x", src.blob(30)) for _ in range(src.below(6))]
                block = bytes(enc.encode(fields, huffman=src.flag()))
                got = dec.decode(block)
                check(list(got) == fields, f"round trip {fields!r} -> {got!r}")
                check_decoder_state(dec)
            continue
        block = src.blob(src.pick((8, 64, 300)))
        expected = _reference_decode(ref, block) if in_step else None
        try:
            got = ours.decode(block)
        except hpack_decoder.HPACKError:
            if in_step and expected is not None:
                check(_reference_lax(block), f"we refused {block!r}, hpack gave {expected!r}")
            return  # a COMPRESSION_ERROR ends the connection: nothing more is decoded
        except hpack_decoder.HeaderListTooLarge as exc:
            check(exc.size > limit == exc.limit, f"{exc}")
            if expected is not None:
                size = sum(len(n) + len(v) + 32 for n, v in expected)
                check(size == exc.size, f"list size {exc.size}, reference {size}")
            check_decoder_state(ours)
            continue
        check_decoder_state(ours)
        size = sum(len(n) + len(v) + 32 for n, v in got)
        check(size <= limit, f"list of {size} returned with limit {limit}")
        if in_step:
            check(expected is not None, f"we accepted {block!r}, the hpack library refused it")
            check(list(got) == expected, f"decoded {got!r}, reference {expected!r}")
        # Cached blocks must decode the same again.
        if ours.last_block_read_only:
            check(list(ours.decode(block)) == list(got), "block cache gave a different list")


def _reference_lax(block: bytes) -> bool:
    """Blocks the hpack library accepts that RFC 7541 or our limits refuse."""
    return False


# ---------------------------------------------------------------------------------
# gRPC message framing and request validation.


def _reference_messages(stream: bytes, limit: int) -> Tuple[List[Tuple[bool, bytes]], Optional[int]]:
    """Messages in a whole body, and the offset of the first bad prefix (or None)."""
    out: List[Tuple[bool, bytes]] = []
    pos = 0
    while len(stream) - pos >= 5:
        flag, length = struct.unpack_from(">BI", stream, pos)
        if flag > 1 or length > limit:
            return out, pos
        if pos + 5 + length > len(stream):
            break
        out.append((flag == 1, stream[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    return out, None


def grpc_messages(data: bytes) -> None:
    src = Source(data)
    limit = src.pick((0, 1, 5, 100, 4 * 1024 * 1024))
    assert isinstance(limit, int)
    seed = src.byte()
    rng = random.Random(seed)
    as_views = bool(seed & 1)  # each chunk a read, cut into views as the engine reports a long run
    body = data[src.pos :]
    decoder = MessageDecoder(limit)
    got: List[Tuple[bool, bytes]] = []
    expected, bad_at = _reference_messages(body, limit)
    fed = 0
    for chunk in _chunks(rng, body):
        try:
            if as_views:
                view = memoryview(chunk)
                cuts = sorted({0, len(chunk), *(rng.randrange(len(chunk) + 1) for _ in range(3))})
                got += decoder.feed_pieces([view[a:b] for a, b in zip(cuts, cuts[1:])])
            else:
                got += decoder.feed(chunk)
        except ProtocolViolation:
            check(bad_at is not None and bad_at < fed + len(chunk), f"ProtocolViolation at {fed}, bad at {bad_at}")
            # Messages completed in the same feed before the bad prefix are dropped
            # with it (the call fails anyway); earlier ones must match.
            check(got == expected[: len(got)], "messages before the bad prefix differ")
            return
        fed += len(chunk)
        check(all(isinstance(p, bytes) for _, p in got), "payload not bytes")
        check_decoder_bound(decoder, limit)
    check(bad_at is None, f"bad prefix at {bad_at} not reported")
    check(got == expected, "messages differ from the reference parse")
    consumed = sum(5 + len(p) for _, p in got)
    check(decoder.buffered == len(body) - consumed, "buffered bytes differ from the unconsumed tail")


def grpc_request(data: bytes) -> None:
    src = Source(data)
    if src.flag():
        # Arbitrary lists, as parse_request's callers may hand it (names are never empty).
        fields = [(f[0].decode("latin-1") or "x", f[1].decode("latin-1")) for f in _header_list(src)]
        check_parse_request(fields)
        return
    # Through the engine: what RequestReceived hands to parse_request.
    conn = H2Connection(H2Config())
    conn.initiate_connection()
    block = encode_headers(_header_list(src))
    frames = PREFACE + CLIENT_SETTINGS + _HEADER.pack(len(block) << 8 | _HEADERS, 5, 1) + block
    for event in conn.receive_data(frames):
        if isinstance(event, RequestReceived):
            check_request_headers(event.headers, conn.config.max_header_list_size)
            check_parse_request(event.headers)


TARGETS: Dict[str, Callable[[bytes], None]] = {
    "h2_raw": h2_raw,
    "h2_frames": h2_frames,
    "hpack": hpack_target,
    "grpc_messages": grpc_messages,
    "grpc_request": grpc_request,
}

__all__ = ["TARGETS", "InvariantViolation", "Source"]
