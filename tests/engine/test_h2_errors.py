"""Malformed input: preface, SETTINGS, every frame type, stream states, header rules."""

from __future__ import annotations

import struct
from typing import List, Tuple

import pytest
from h2_helpers import (
    REQUEST_BLOCK,
    REQUEST_FIELDS,
    RESPONSE_BLOCK,
    data_frame,
    frame,
    goaway_of,
    headers_frame,
    parse_frames,
    ping_frame,
    raw_server,
    rsts_of,
    settings_frame,
    window_update_frame,
)

from puregrpc._h2.connection import PREFACE, H2Config, H2Connection
from puregrpc._h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RequestReceived,
    StreamReset,
    TrailersReceived,
)
from puregrpc._h2.hpack_encoder import encode_headers

PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
COMPRESSION_ERROR = 0x9


def terminated_with(server: H2Connection, events: List[Event], code: int) -> None:
    """The last event is ConnectionTerminated(code); a matching GOAWAY is queued."""
    assert isinstance(events[-1], ConnectionTerminated), events
    assert events[-1].error_code == code, events[-1]
    assert sum(isinstance(e, ConnectionTerminated) for e in events) == 1
    goaway = goaway_of(server.data_to_send())
    assert goaway is not None
    assert goaway[0] == server.last_stream_id
    assert goaway[1] == code
    assert goaway[2] == events[-1].message.encode()
    assert server.terminated
    assert server.receive_data(ping_frame()) == []


def connection_error(data: bytes, code: int, server: H2Connection | None = None) -> None:
    server = server or raw_server()
    terminated_with(server, server.receive_data(data), code)


# -- preface -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        b"\x16\x03\x01\x02\x00",  # TLS ClientHello on a plaintext port
    ],
)
def test_bad_preface(data: bytes) -> None:
    server = H2Connection()
    server.initiate_connection()
    server.data_to_send()
    terminated_with(server, server.receive_data(data), PROTOCOL_ERROR)


def test_preface_must_be_followed_by_settings() -> None:
    server = H2Connection()
    connection_error(PREFACE + ping_frame(), PROTOCOL_ERROR, server)
    server = H2Connection()
    connection_error(PREFACE + settings_frame(ack=True), PROTOCOL_ERROR, server)


# -- SETTINGS --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        ([(2, 2)], PROTOCOL_ERROR),  # ENABLE_PUSH not 0/1
        ([(4, 1 << 31)], FLOW_CONTROL_ERROR),  # INITIAL_WINDOW_SIZE > 2^31-1
        ([(5, 16383)], PROTOCOL_ERROR),  # MAX_FRAME_SIZE too small
        ([(5, 1 << 24)], PROTOCOL_ERROR),  # MAX_FRAME_SIZE too large
        ([(8, 2)], PROTOCOL_ERROR),  # ENABLE_CONNECT_PROTOCOL
        ([(9, 7)], PROTOCOL_ERROR),  # NO_RFC7540_PRIORITIES
    ],
)
def test_settings_values(pairs: List[Tuple[int, int]], code: int) -> None:
    connection_error(settings_frame(*pairs), code)


def test_settings_accepted_values_and_unknown_ignored() -> None:
    server = raw_server()
    events = server.receive_data(
        settings_frame((1, 0), (2, 0), (3, 10), (4, (1 << 31) - 1), (5, 1 << 20), (6, 100))
        + settings_frame((0xABCD, 99), (5, (1 << 24) - 1))
    )
    assert events == []  # the initial window grew, but no DATA waits for it
    out = server.data_to_send()
    assert out == frame(0x4, 0x1, 0) * 2  # one ACK each
    assert server.peer_max_header_list_size == 100


def test_settings_frame_errors() -> None:
    connection_error(frame(0x4, 0, 0, b"\0" * 7), FRAME_SIZE_ERROR)
    connection_error(frame(0x4, 0x1, 0, b"\0" * 6), FRAME_SIZE_ERROR)
    connection_error(frame(0x4, 0, 1, b""), PROTOCOL_ERROR)


# -- frame-level errors ---------------------------------------------------------------


def test_frame_over_max_frame_size() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    # Rejected from the header alone: the payload is never buffered.
    events = server.receive_data(frame(0x0, 0, 1, b"x" * 16385)[:20])
    terminated_with(server, events, FRAME_SIZE_ERROR)


def test_larger_max_frame_size_accepted() -> None:
    server = raw_server(H2Config(max_frame_size=1 << 20))
    server.receive_data(headers_frame(1))
    events = server.receive_data(data_frame(1, b"x" * 100_000))
    assert events == [DataReceived(1, b"x" * 100_000, 100_000, False)]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (data_frame(0, b"x"), PROTOCOL_ERROR),
        (headers_frame(0), PROTOCOL_ERROR),
        (frame(0x2, 0, 0, b"\0" * 5), PROTOCOL_ERROR),  # PRIORITY on stream 0
        (frame(0x3, 0, 0, b"\0" * 4), PROTOCOL_ERROR),
        (frame(0x3, 0, 1, b"\0" * 3), FRAME_SIZE_ERROR),
        (frame(0x5, 0x4, 1, b"\0\0\0\x02" + REQUEST_BLOCK), PROTOCOL_ERROR),  # PUSH_PROMISE
        (frame(0x6, 0, 0, b"\0" * 7), FRAME_SIZE_ERROR),
        (frame(0x6, 0, 1, b"\0" * 8), PROTOCOL_ERROR),
        (frame(0x7, 0, 0, b"\0" * 7), FRAME_SIZE_ERROR),
        (frame(0x7, 0, 1, b"\0" * 8), PROTOCOL_ERROR),
        (frame(0x8, 0, 0, b"\0" * 5), FRAME_SIZE_ERROR),
        (frame(0x8, 0, 1, b"\0" * 3), FRAME_SIZE_ERROR),
        (frame(0x9, 0x4, 1, REQUEST_BLOCK), PROTOCOL_ERROR),  # CONTINUATION, no HEADERS
        (frame(0x0, 0x8, 1, b""), FRAME_SIZE_ERROR),  # padded DATA without pad length
        (frame(0x1, 0x8 | 0x4, 1, b""), FRAME_SIZE_ERROR),
        (frame(0x1, 0x20 | 0x4, 1, b"\0\0"), FRAME_SIZE_ERROR),  # PRIORITY fields cut
        (headers_frame(1, b"\xff\xff\xff\xff"), COMPRESSION_ERROR),  # bad HPACK index
        (headers_frame(1, b"\x3f\xe1\xff\x03"), COMPRESSION_ERROR),  # table size too big
        (headers_frame(2), PROTOCOL_ERROR),  # even stream id
    ],
)
def test_connection_errors(data: bytes, code: int) -> None:
    connection_error(data, code)


def test_bad_padding() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    connection_error(frame(0x0, 0x8, 1, b"\x05abcd"), PROTOCOL_ERROR, server)
    connection_error(frame(0x1, 0x8 | 0x4, 1, b"\x10" + REQUEST_BLOCK[:5]), PROTOCOL_ERROR)
    # Pad length equal to the payload minus its own byte: empty data, allowed.
    server = raw_server()
    server.receive_data(headers_frame(1))
    assert server.receive_data(frame(0x0, 0x8, 1, b"\x03\0\0\0")) == [DataReceived(1, b"", 4, False)]


def test_frames_inside_header_block() -> None:
    start = headers_frame(1, REQUEST_BLOCK[:10], end_headers=False)
    rest = frame(0x9, 0x4, 1, REQUEST_BLOCK[10:])
    connection_error(start + ping_frame() + rest, PROTOCOL_ERROR)
    connection_error(start + data_frame(1, b"x"), PROTOCOL_ERROR)
    connection_error(start + frame(0x9, 0x4, 3, REQUEST_BLOCK[10:]), PROTOCOL_ERROR)
    connection_error(start + headers_frame(3), PROTOCOL_ERROR)
    server = raw_server()
    events = server.receive_data(start + frame(0x9, 0, 1, b"") + rest)
    assert [type(e) for e in events] == [RequestReceived]


def test_priority_frame_errors_are_stream_errors() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    assert server.receive_data(frame(0x2, 0, 1, b"\0" * 4)) == [StreamReset(1, 6, False)]
    assert server.receive_data(frame(0x2, 0, 3, struct.pack(">IB", 3, 0))) == []
    assert rsts_of(server.data_to_send()) == [(1, FRAME_SIZE_ERROR), (3, PROTOCOL_ERROR)]
    assert not server.terminated
    # PRIORITY on an idle stream does not open it.
    server.receive_data(frame(0x2, 0, 5, struct.pack(">IB", 0, 0)))
    assert [type(e) for e in server.receive_data(headers_frame(7))] == [RequestReceived]


def test_headers_depending_on_itself() -> None:
    server = raw_server()
    payload = struct.pack(">IB", 1, 16) + REQUEST_BLOCK
    assert server.receive_data(frame(0x1, 0x4 | 0x20, 1, payload)) == [StreamReset(1, PROTOCOL_ERROR, False)]
    assert not server.terminated


# -- stream states ----------------------------------------------------------------


def test_frames_on_idle_streams() -> None:
    connection_error(data_frame(1, b"x"), PROTOCOL_ERROR)
    connection_error(frame(0x3, 0, 1, b"\0\0\0\x08"), PROTOCOL_ERROR)
    connection_error(window_update_frame(1, 10), PROTOCOL_ERROR)
    server = raw_server()
    server.receive_data(headers_frame(1))
    connection_error(data_frame(3, b"x"), PROTOCOL_ERROR, server)
    server = raw_server()
    server.receive_data(headers_frame(1))
    connection_error(data_frame(2, b"x"), PROTOCOL_ERROR, server)


def test_stream_ids_must_increase() -> None:
    server = raw_server()
    server.receive_data(headers_frame(5, end_stream=True))
    connection_error(headers_frame(3), PROTOCOL_ERROR, server)


def test_data_after_end_stream() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1, end_stream=True))
    assert server.receive_data(data_frame(1, b"x")) == [StreamReset(1, STREAM_CLOSED, False)]
    assert rsts_of(server.data_to_send()) == [(1, STREAM_CLOSED)]
    assert server.open_stream_count == 0


def test_data_and_headers_on_closed_stream() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1, end_stream=True))
    server.send_headers(1, RESPONSE_BLOCK, end_stream=True)
    server.data_to_send()
    assert server.open_stream_count == 0
    assert server.receive_data(data_frame(1, b"x")) == []  # the app no longer knows it
    assert rsts_of(server.data_to_send()) == [(1, STREAM_CLOSED)]
    assert not server.terminated
    # HEADERS after END_STREAM on a closed stream: connection error (RFC 9113 5.1).
    server.receive_data(headers_frame(3, end_stream=True))
    server.send_headers(3, RESPONSE_BLOCK, end_stream=True)
    server.data_to_send()
    events = server.receive_data(headers_frame(3, encode_headers([(b"x", b"y")]), True))
    terminated_with(server, events, STREAM_CLOSED)


def test_frames_after_our_reset_are_tolerated() -> None:
    server = raw_server(H2Config(connection_window_size=65535))
    server.receive_data(headers_frame(1))
    server.reset_stream(1, 8)
    server.data_to_send()
    events = server.receive_data(
        data_frame(1, b"x" * 16000) * 3
        + window_update_frame(1, 5)
        + frame(0x2, 0, 1, struct.pack(">IB", 0, 0))
        + headers_frame(1, encode_headers([(b"x-t", b"1")]), end_stream=True)
        + frame(0x3, 0, 1, b"\0\0\0\x08")
    )
    assert events == []
    out = server.data_to_send()
    assert rsts_of(out) == []
    # The dropped DATA was returned to the connection window by the engine (what is
    # not sent yet waits for the batch: half the window, or the window running low).
    credited = sum(struct.unpack(">I", p)[0] for t, _, sid, p in parse_frames(out) if t == 0x8 and sid == 0)
    assert credited > 0
    assert credited + server._conn_unacked == 48000


def test_refused_stream_data_is_ignored() -> None:
    server = raw_server(H2Config(max_concurrent_streams=1))
    server.receive_data(headers_frame(1))
    events = server.receive_data(headers_frame(3) + data_frame(3, b"body", end_stream=True))
    assert events == []
    assert rsts_of(server.data_to_send()) == [(3, REFUSED_STREAM)]


def test_trailers_without_end_stream() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    trailers = encode_headers([(b"x-t", b"1")])
    assert server.receive_data(headers_frame(1, trailers)) == [StreamReset(1, PROTOCOL_ERROR, False)]


def test_content_length_mismatch() -> None:
    block = encode_headers([*REQUEST_FIELDS, (b"content-length", b"3")])
    server = raw_server()
    server.receive_data(headers_frame(1, block))
    assert server.receive_data(data_frame(1, b"ab", end_stream=True)) == [StreamReset(1, PROTOCOL_ERROR, False)]
    server.receive_data(headers_frame(3, block))
    assert server.receive_data(data_frame(3, b"abcd")) == [StreamReset(3, PROTOCOL_ERROR, False)]
    events = server.receive_data(headers_frame(5, block) + data_frame(5, b"abc", end_stream=True))
    assert [type(e) for e in events] == [RequestReceived, DataReceived]
    assert server.receive_data(headers_frame(7, block, end_stream=True)) == [StreamReset(7, PROTOCOL_ERROR, False)]


# -- header validation (RFC 9113 8.2, 8.3) ------------------------------------------

BASE = REQUEST_FIELDS


def without(name: bytes) -> List[Tuple[bytes, bytes]]:
    return [(n, v) for n, v in BASE if n != name]


MALFORMED_REQUESTS = {
    "uppercase name": [*BASE, (b"X-Upper", b"1")],
    "space in name": [*BASE, (b"x y", b"1")],
    "empty name": [*BASE, (b"", b"1")],
    "colon inside name": [*BASE, (b"x:y", b"1")],
    "non-ascii name": [*BASE, (b"x\xe9", b"1")],
    "NUL in value": [*BASE, (b"x", b"a\0b")],
    "CR in value": [*BASE, (b"x", b"a\rb")],
    "LF in value": [*BASE, (b"x", b"a\nb")],
    "connection": [*BASE, (b"connection", b"close")],
    "keep-alive": [*BASE, (b"keep-alive", b"1")],
    "proxy-connection": [*BASE, (b"proxy-connection", b"1")],
    "transfer-encoding": [*BASE, (b"transfer-encoding", b"chunked")],
    "upgrade": [*BASE, (b"upgrade", b"h2c")],
    "te gzip": [*without(b"te"), (b"te", b"gzip")],
    "pseudo after regular": [*without(b":authority"), (b":authority", b"x")],
    "unknown pseudo": [(b":foo", b"x"), *BASE],
    "response pseudo": [(b":status", b"200"), *BASE],
    "duplicate :path": [(b":path", b"/x"), *BASE],
    "duplicate :method": [(b":method", b"GET"), *BASE],
    "missing :method": without(b":method"),
    "missing :scheme": without(b":scheme"),
    "missing :path": without(b":path"),
    "empty :path": [(n, b"" if n == b":path" else v) for n, v in BASE],
    "bad content-length": [*BASE, (b"content-length", b"x1")],
    "CONNECT with path": [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")],
    "CONNECT without authority": [(b":method", b"CONNECT")],
}


@pytest.mark.parametrize("name", sorted(MALFORMED_REQUESTS))
def test_malformed_request_is_stream_error(name: str) -> None:
    server = raw_server()
    block = encode_headers(MALFORMED_REQUESTS[name])
    events = server.receive_data(headers_frame(1, block, end_stream=True))
    assert events == [StreamReset(1, PROTOCOL_ERROR, False)]
    assert rsts_of(server.data_to_send()) == [(1, PROTOCOL_ERROR)]
    # The connection and its HPACK state survive.
    assert [type(e) for e in server.receive_data(headers_frame(3))] == [RequestReceived]
    assert server.last_stream_id == 3


def test_well_formed_edge_requests() -> None:
    server = raw_server()
    ok = [
        [(b":method", b"CONNECT"), (b":authority", b"example.com:443")],
        [*BASE, (b"x", b"")],  # empty value
        [*BASE, (b"x", b"a b\tc")],  # inner whitespace
        [*BASE, (b"x-bin", bytes(range(0x80, 0x100)))],  # any high byte in values
        [*BASE, (b"content-length", b"0"), (b"content-length", b"0")],
        [*without(b":authority")],
    ]
    sid = 1
    for fields in ok:
        events = server.receive_data(headers_frame(sid, encode_headers(fields), end_stream=True))
        assert [type(e) for e in events] == [RequestReceived], fields
        sid += 2


@pytest.mark.parametrize(
    "fields",
    [
        [(b":path", b"/x")],
        [(b"X", b"1")],
        [(b"connection", b"close")],
        [(b"te", b"gzip")],
        [(b"x", b"a\nb")],
    ],
)
def test_malformed_trailers(fields: List[Tuple[bytes, bytes]]) -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    events = server.receive_data(headers_frame(1, encode_headers(fields), end_stream=True))
    assert events == [StreamReset(1, PROTOCOL_ERROR, False)]


def test_trailers_on_half_closed_remote_stream() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1, end_stream=True))
    trailers = encode_headers([(b"x-t", b"1")])
    assert server.receive_data(headers_frame(1, trailers, end_stream=True)) == [StreamReset(1, STREAM_CLOSED, False)]


@pytest.mark.parametrize(
    ("value", "trimmed"),
    [(b" a", "a"), (b"a\t", "a"), (b" \ta b \t", "a b"), (b"  ", "")],
)
def test_padded_values_are_trimmed_not_refused(value: bytes, trimmed: str) -> None:
    """grpcio's client sends metadata values with surrounding whitespace and grpcio's
    server serves them: the value is trimmed (RFC 9110 5.5), the request accepted."""
    server = raw_server()
    events = server.receive_data(headers_frame(1, encode_headers([*BASE, (b"x", value), (b"y", b"ok ")])))
    assert [type(e) for e in events] == [RequestReceived]
    headers = dict(events[0].headers)
    assert headers["x"] == trimmed
    assert headers["y"] == "ok"
    assert not rsts_of(server.data_to_send())


def test_padded_trailer_values_are_trimmed() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    events = server.receive_data(headers_frame(1, encode_headers([(b"x-t", b" v ")]), end_stream=True))
    assert [type(e) for e in events] == [TrailersReceived]
    assert events[0].headers == [("x-t", "v")]
