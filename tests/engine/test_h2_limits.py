"""Limits and flood bounds: each one stops an abusive peer with GOAWAY, keeps memory
bounded, and leaves a well-behaved client alone."""

from __future__ import annotations

import struct

import h2.events
import hpack
from h2_helpers import (
    REQUEST,
    REQUEST_BLOCK,
    REQUEST_FIELDS,
    RESPONSE_BLOCK,
    Pair,
    data_frame,
    frame,
    goaway_of,
    headers_frame,
    of_type,
    parse_frames,
    ping_frame,
    raw_server,
    rst_frame,
    rsts_of,
    settings_frame,
)

from puregrpc._h2.connection import RECENTLY_CLOSED_LIMIT, H2Config, H2Connection
from puregrpc._h2.events import (
    ConnectionTerminated,
    Event,
    RequestHeadersTooLarge,
    RequestReceived,
    StreamReset,
)
from puregrpc._h2.hpack_encoder import encode_headers

ENHANCE_YOUR_CALM = 0xB
REFUSED_STREAM = 0x7
MAX_ID = (1 << 31) - 1


def calm(server: H2Connection, events: list[Event]) -> str:
    """Assert the connection ended with ENHANCE_YOUR_CALM; return the message."""
    assert isinstance(events[-1], ConnectionTerminated), events[-3:]
    assert events[-1].error_code == ENHANCE_YOUR_CALM
    goaway = goaway_of(server.data_to_send())
    assert goaway is not None and goaway[1] == ENHANCE_YOUR_CALM
    assert server.open_stream_count == 0
    return events[-1].message


def bounded(server: H2Connection) -> None:
    assert len(server._recent) <= RECENTLY_CLOSED_LIMIT
    assert len(server._inbuf) <= 9 + server.config.max_frame_size
    assert len(server._request_cache) <= 16
    assert len(server._start_cache) <= 16


# -- concurrency and GOAWAY ----------------------------------------------------------


def test_max_concurrent_streams_refuses_extra() -> None:
    server = raw_server(H2Config(max_concurrent_streams=2))
    events = server.receive_data(headers_frame(1) + headers_frame(3) + headers_frame(5))
    assert [e.stream_id for e in events] == [1, 3]  # type: ignore[attr-defined]
    assert rsts_of(server.data_to_send()) == [(5, REFUSED_STREAM)]
    assert server.streams_refused == 1  # not reported as an event: counted
    assert server.open_stream_count == 2
    assert server.last_stream_id == 3
    # Half-closed streams still count; a fully closed one frees a slot.
    server.receive_data(data_frame(1, b"", end_stream=True))
    assert server.receive_data(headers_frame(7)) == []
    server.send_headers(1, RESPONSE_BLOCK, end_stream=True)
    assert [type(e) for e in server.receive_data(headers_frame(9))] == [RequestReceived]


def test_max_concurrent_streams_with_h2_client() -> None:
    pair = Pair(H2Config(max_concurrent_streams=5))
    for _ in range(5):
        pair.request(body=None, end_stream=False)
    pair.pump()
    assert pair.server.open_stream_count == 5
    assert pair.client.open_outbound_streams == 5  # h2 honours our SETTINGS


def test_graceful_goaway_two_step() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    server.goaway(MAX_ID)
    assert goaway_of(server.data_to_send()) == (MAX_ID, 0, b"")
    # Streams opened before the client saw the first GOAWAY are still served.
    assert [type(e) for e in server.receive_data(headers_frame(3))] == [RequestReceived]
    server.goaway(server.last_stream_id)
    assert goaway_of(server.data_to_send()) == (3, 0, b"")
    assert server.streams_refused == 0
    assert server.receive_data(headers_frame(5) + data_frame(5, b"x")) == []
    assert rsts_of(server.data_to_send()) == [(5, REFUSED_STREAM)]
    assert server.streams_refused == 1
    # Existing streams finish normally.
    assert [type(e) for e in server.receive_data(data_frame(3, b"x", True))] != []
    assert not server.terminated
    server.goaway(MAX_ID)  # a later GOAWAY never raises the last stream id
    assert goaway_of(server.data_to_send()) == (3, 0, b"")


# -- header list size and header blocks ------------------------------------------------


def test_header_list_over_limit_refuses_only_that_stream() -> None:
    """RFC 9113 10.5.1: an oversized header list refuses its stream; the HPACK
    state stays in step, so later requests on the connection are served."""
    server = raw_server(H2Config(max_header_list_size=4000))
    encoder = hpack.Encoder()  # indexing encoder: the oversized block changes the table
    first = encoder.encode([*REQUEST_FIELDS, (b"x-keep", b"k" * 100)])
    assert [type(e) for e in server.receive_data(headers_frame(1, first, end_stream=True))] == [RequestReceived]
    many = [(f"x-{i}".encode(), b"m" * 20) for i in range(200)]  # 200 small fields, indexed
    for sid, fields in ((3, [(b"x-big", b"v" * 5000)]), (5, many)):
        block = encoder.encode([*REQUEST_FIELDS, *fields])
        events = server.receive_data(headers_frame(sid, block, end_stream=False))
        assert events == [RequestHeadersTooLarge(sid, events[0].size, 4000, False)]
        assert events[0].size > 4000
        assert not server.terminated
    # The next block refers to table entries inserted by the oversized one.
    after = encoder.encode([*REQUEST_FIELDS, many[-1], many[-2]])
    assert after[-1] & 0x80 and after[-2] & 0x80  # indexed references (RFC 7541 6.1)
    events = server.receive_data(headers_frame(7, after, end_stream=True))
    assert [type(e) for e in events] == [RequestReceived]
    assert ("x-199", "m" * 20) in events[0].headers and ("x-198", "m" * 20) in events[0].headers
    # The refused streams are open: the application answers them.
    server.send_headers(3, RESPONSE_BLOCK, end_stream=True)
    assert server.open_stream_count == 4


def test_repeated_oversized_header_lists_end_the_connection() -> None:
    server = raw_server(H2Config(max_header_list_size=4000, reset_burst=10))
    big = encode_headers([*REQUEST_FIELDS, (b"x-big", b"v" * 5000)])
    events: list[Event] = []
    for sid in range(1, 40, 2):
        events += server.receive_data(headers_frame(sid, big, end_stream=True))
        if server.terminated:
            break
    assert "oversized header lists" in calm(server, events)


def test_hpack_bomb_is_refused_with_bounded_memory() -> None:
    """A 4 KB table entry referenced many times: a tiny block, a huge header list.
    The list is not built past the limit, and only the stream is refused."""
    server = raw_server()
    encoder = hpack.Encoder()
    fields = [(n, v) for n, v in REQUEST_FIELDS]
    first = encoder.encode([*fields, (b"x-bomb", b"b" * 4000)])
    server.receive_data(headers_frame(1, first, end_stream=True))
    # x-bomb was inserted last: dynamic index 62 (RFC 7541 2.3.3).
    bomb = REQUEST_BLOCK + bytes([0x80 | 62]) * 200
    assert len(bomb) < 400
    events = server.receive_data(headers_frame(3, bomb, end_stream=True))
    assert [type(e) for e in events] == [RequestHeadersTooLarge]
    assert events[0].size > 800_000
    assert not server.terminated


def test_trailers_over_limit() -> None:
    server = raw_server(H2Config(max_header_list_size=4000))
    server.receive_data(headers_frame(1))
    trailers = encode_headers([(b"x-big", b"v" * 5000)])
    assert server.receive_data(headers_frame(1, trailers, end_stream=True)) == [
        StreamReset(1, ENHANCE_YOUR_CALM, False)
    ]


def test_continuation_flood() -> None:
    server = raw_server()
    data = headers_frame(1, REQUEST_BLOCK[:1], end_headers=False)
    data += frame(0x9, 0, 1, b"") * 200
    assert "CONTINUATION" in calm(server, server.receive_data(data))


def test_header_block_size_bound() -> None:
    server = raw_server(H2Config(max_header_list_size=4096))  # block bound 256 KiB
    data = headers_frame(1, REQUEST_BLOCK, end_headers=False)
    data += frame(0x9, 0, 1, b"\x00" * 16000) * 17
    events = server.receive_data(data)
    assert "header block too large" in calm(server, events)
    bounded(server)


def test_many_continuations_from_a_legit_peer() -> None:
    server = raw_server()
    block = encode_headers([*REQUEST_FIELDS, (b"x", b"y" * 2000)])
    data = headers_frame(1, block[:100], end_headers=False)
    chunks = [block[i : i + 100] for i in range(100, len(block), 100)]
    for i, chunk in enumerate(chunks):
        data += frame(0x9, 0x4 if i == len(chunks) - 1 else 0, 1, chunk)
    assert [type(e) for e in server.receive_data(data)] == [RequestReceived]


# -- rapid reset --------------------------------------------------------------------


def test_rapid_reset_goaway() -> None:
    server = raw_server()
    events: list[Event] = []
    sid = 1
    while not server.terminated and sid < 10_000:
        events += server.receive_data(headers_frame(sid) + rst_frame(sid), now=5.0)
        sid += 2
        bounded(server)
    assert "too many stream resets" in calm(server, events)
    # The burst is 1000 resets; the offender is cut off at the next one.
    assert len(of_type(events, StreamReset)) == 1000


def test_refused_streams_count_as_resets() -> None:
    server = raw_server(H2Config(max_concurrent_streams=1))
    server.receive_data(headers_frame(1))
    events: list[Event] = []
    for first in range(3, 2400, 200):
        events += server.receive_data(b"".join(headers_frame(sid) for sid in range(first, first + 200, 2)), now=1.0)
        if server.terminated:
            break
        assert len(rsts_of(server.data_to_send())) == 100
    assert "too many stream resets" in calm(server, events)


def test_provoked_stream_errors_count_as_resets() -> None:
    """MadeYouReset: malformed frames that make us reset streams."""
    server = raw_server()
    events: list[Event] = []
    for sid in range(1, 5000, 2):
        events += server.receive_data(headers_frame(sid) + frame(0x8, 0, sid, b"\0\0\0\0"))
        if server.terminated:
            break
    calm(server, events)


def test_cancelling_many_streams_at_once_is_fine() -> None:
    pair = Pair()
    sids = [pair.request(body=None, end_stream=False) for _ in range(900)]
    pair.pump()
    for sid in sids:
        pair.client.reset_stream(sid, 8)
    events, _ = pair.pump()
    assert len(of_type(events, StreamReset)) == 900
    assert not pair.server.terminated


def test_steady_resets_below_rate_are_fine() -> None:
    server = raw_server()
    now = 0.0
    for sid in range(1, 2 * 5000, 2):  # 5000 resets at 150 per second
        events = server.receive_data(headers_frame(sid) + rst_frame(sid), now=now)
        assert not any(isinstance(e, ConnectionTerminated) for e in events)
        now += 1 / 150
        bounded(server)


# -- control frame floods -----------------------------------------------------------


def test_ping_flood_rate() -> None:
    server = raw_server()
    events: list[Event] = []
    for i in range(600):
        events += server.receive_data(ping_frame(), now=1.0 + i * 0.0001)
        if server.terminated:
            break
        server.data_to_send()  # the caller drains: only the rate budget applies
    assert "too many control frames" in calm(server, events)


def test_ping_flood_while_not_reading_output() -> None:
    config = H2Config(control_frame_burst=100_000)  # only the queue bound applies
    server = raw_server(config)
    events = server.receive_data(ping_frame() * 2000)
    assert "too many queued frames" in calm(server, events)
    assert len(server._out) < 1100 * 17 + 100  # bounded by max_queued_control_frames


def test_settings_flood() -> None:
    server = raw_server()
    events = server.receive_data(settings_frame((3, 100)) * 600)
    assert "too many control frames" in calm(server, events)


def test_normal_pings_and_settings_are_fine() -> None:
    pair = Pair()
    for i in range(2000):  # 20 per second, for 100 seconds
        pair.now = i * 0.05
        pair.client.ping(b"%08d" % i)
        if i % 100 == 0:
            pair.client.update_settings({3: 100 + i})
        pair.pump()
    assert not pair.server.terminated
    assert len(of_type(pair.client_events, h2.events.PingAckReceived)) == 2000


# -- useless frames ------------------------------------------------------------------


def test_empty_data_flood() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    events = server.receive_data(data_frame(1, b"") * 1500)
    assert "empty DATA frames" in calm(server, events)


def test_priority_and_unknown_frame_flood() -> None:
    server = raw_server()
    events = server.receive_data(frame(0x2, 0, 1, struct.pack(">IB", 0, 0)) * 1500)
    assert "PRIORITY" in calm(server, events)
    server = raw_server()
    events = server.receive_data(frame(0xEE, 0, 0, b"x") * 1500)
    assert "unknown frame types" in calm(server, events)


def test_unsolicited_ack_flood() -> None:
    server = raw_server()
    events = server.receive_data(ping_frame(ack=True) * 1500)
    assert "unsolicited ACKs" in calm(server, events)


def test_data_on_closed_streams_flood() -> None:
    server = raw_server()
    events: list[Event] = []
    for sid in range(1, 3000, 2):
        server.receive_data(headers_frame(sid, end_stream=True))
        server.send_headers(sid, RESPONSE_BLOCK, end_stream=True)
        server.data_to_send()
        # One RST_STREAM(STREAM_CLOSED) each; later frames on it are ignored.
        events += server.receive_data(data_frame(sid, b"x") * 3)
        if server.terminated:
            break
        assert rsts_of(server.data_to_send()) == [(sid, 0x5)]
    assert "closed streams" in calm(server, events)


def test_normal_client_stays_within_useless_budget() -> None:
    pair = Pair()
    for i in range(300):
        pair.now = i * 0.01
        sid = pair.request(headers=REQUEST, body=b"", end_stream=False)
        pair.client.send_data(sid, b"", end_stream=False)  # the odd empty frame
        pair.client.send_data(sid, b"x", end_stream=True)
        pair.pump()
        pair.server.send_headers(sid, RESPONSE_BLOCK, end_stream=True)
        pair.pump()
    assert not pair.server.terminated
    assert len(of_type(pair.server_events, RequestReceived)) == 300
    bounded(pair.server)


def test_recently_closed_memory_is_bounded() -> None:
    server = raw_server(H2Config(reset_rate=1e9))
    for sid in range(1, 2 * 5000, 2):
        server.receive_data(headers_frame(sid))
        server.reset_stream(sid, 8)
        server.data_to_send()
    assert len(server._recent) == RECENTLY_CLOSED_LIMIT
    # The oldest are forgotten: HEADERS reusing them is a connection error STREAM_CLOSED
    # (RFC 9113 5.1: they were opened, so they are closed, not idle).
    assert server.receive_data(headers_frame(1))[-1].error_code == 0x5  # type: ignore[attr-defined]
    assert server.terminated


# -- client PING policing (gRFC A8) ------------------------------------------------------


def _acks(server: H2Connection) -> int:
    return len([f for f in parse_frames(server.data_to_send()) if f[0] == 0x6 and f[1] & 0x1])


def test_ping_policing_is_off_by_default() -> None:
    server = raw_server()
    for n in range(50):
        server.receive_data(ping_frame(bytes([n]) * 8), now=0.0)
    assert not server.terminated


def test_ping_strikes_end_the_connection_with_too_many_pings() -> None:
    server = raw_server(H2Config(max_ping_strikes=2, min_ping_interval=10.0))
    server.receive_data(headers_frame(1))  # a stream is open: the interval is 10 s
    events: list[Event] = []
    for n, now in enumerate((0.0, 1.0, 2.0, 3.0)):  # the first is free, then strikes 1, 2, 3
        events += server.receive_data(ping_frame(bytes([n]) * 8), now=now)
    assert events[-1].message == "too_many_pings"
    goaway = goaway_of(server.data_to_send())
    assert goaway is not None and goaway[1:] == (ENHANCE_YOUR_CALM, b"too_many_pings")


def test_pings_far_enough_apart_or_after_data_are_not_strikes() -> None:
    server = raw_server(H2Config(max_ping_strikes=1, min_ping_interval=10.0))
    server.receive_data(headers_frame(1))
    for n, now in enumerate((0.0, 10.0, 20.0, 30.0)):  # exactly the interval apart
        server.receive_data(ping_frame(bytes([n]) * 8), now=now)
    assert not server.terminated
    for n in range(5):  # quick, but the server sends HEADERS/DATA in between
        server.send_headers(1, RESPONSE_BLOCK) if n == 0 else server.send_data(1, b"d")
        server.receive_data(ping_frame(bytes([n]) * 8), now=31.0 + n * 0.01)
    assert not server.terminated
    assert _acks(server) >= 5


def test_without_calls_pings_need_two_hours_unless_permitted() -> None:
    strict = raw_server(H2Config(max_ping_strikes=1, min_ping_interval=1.0))
    for n, now in enumerate((0.0, 60.0, 120.0)):  # no stream open: 2 h apart needed
        strict.receive_data(ping_frame(bytes([n]) * 8), now=now)
    assert strict.terminated
    lenient = raw_server(H2Config(max_ping_strikes=1, min_ping_interval=1.0, permit_pings_without_calls=True))
    for n, now in enumerate((0.0, 60.0, 120.0)):
        lenient.receive_data(ping_frame(bytes([n]) * 8), now=now)
    assert not lenient.terminated
