"""RFC 9113 stream states (5.1) and stream concurrency (5.1.2), with the h2 library as
the peer, in the shape of h2spec's cases."""

from __future__ import annotations

import struct

import h2.events
import h2.settings
from h2_helpers import (
    REQUEST,
    RESPONSE_BLOCK,
    TRAILERS_BLOCK,
    Pair,
    data_frame,
    frame,
    goaway_of,
    headers_frame,
    of_type,
    raw_server,
    rst_frame,
    rsts_of,
)

from puregrpc._h2.connection import RECENTLY_CLOSED_LIMIT, H2Config
from puregrpc._h2.events import ConnectionTerminated, RequestReceived, StreamReset
from puregrpc._h2.hpack_encoder import encode_headers

S = h2.settings.SettingCodes
PROTOCOL_ERROR = 0x1
STREAM_CLOSED = 0x5
REFUSED_STREAM = 0x7
TRAILERS_ONLY = encode_headers([(b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"12")])


def raw_request(pair: Pair, sid: int, end_stream: bool = True) -> bytes:
    """A request HEADERS frame the h2 client would refuse to send, encoded with its
    HPACK encoder so that the tables stay in step."""
    block = pair.client.encoder.encode(REQUEST)
    return frame(0x1, 0x4 | (0x1 if end_stream else 0), sid, block)


def closed_by_exchange(pair: Pair) -> int:
    """A stream closed normally: request with END_STREAM, answer with END_STREAM."""
    sid = pair.request(body=None)
    pair.pump()
    pair.respond(sid)
    _, client_events = pair.pump()
    assert of_type(client_events, h2.events.StreamEnded)
    assert not pair.server.stream_is_open(sid)
    return sid


# -- 5.1 "closed" ------------------------------------------------------------------


def test_headers_on_a_closed_stream_is_a_connection_error() -> None:
    pair = Pair()
    sid = closed_by_exchange(pair)
    events = pair.to_server(raw_request(pair, sid))
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == STREAM_CLOSED
    _, client_events = pair.pump()
    terminated = of_type(client_events, h2.events.ConnectionTerminated)
    assert terminated and terminated[0].error_code == STREAM_CLOSED
    assert pair.server.invariant_violations() == []


def test_headers_on_a_closed_and_forgotten_stream_is_a_connection_error() -> None:
    pair = Pair(H2Config(reset_rate=1e9))
    first = closed_by_exchange(pair)
    for _ in range(RECENTLY_CLOSED_LIMIT + 10):
        closed_by_exchange(pair)
    assert first not in pair.server._recent
    events = pair.to_server(raw_request(pair, first))
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == STREAM_CLOSED


def test_headers_on_a_skipped_stream_id_is_a_protocol_error() -> None:
    """5.1.1: a lower id the client never used is not "closed" but out of order."""
    server = raw_server()
    server.receive_data(headers_frame(7, end_stream=True))
    server.send_headers(7, TRAILERS_BLOCK, end_stream=True)
    events = server.receive_data(headers_frame(3))
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == PROTOCOL_ERROR


def test_headers_after_the_peers_reset_is_a_stream_error() -> None:
    pair = Pair()
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.client.reset_stream(sid)
    pair.pump()
    assert pair.to_server(raw_request(pair, sid)) == []
    assert rsts_of(pair.server.data_to_send()) == [(sid, STREAM_CLOSED)]
    assert not pair.server.terminated


def test_frames_in_flight_after_our_reset_are_ignored() -> None:
    pair = Pair()
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.server.reset_stream(sid, 0x8)
    # The client sends its trailers before it reads our RST_STREAM.
    pair.client.send_headers(sid, [("x-t", "1")], end_stream=True)
    assert pair.to_server(pair.client.data_to_send()) == []
    assert not pair.server.terminated


def test_data_after_end_stream_on_a_closed_stream_is_refused() -> None:
    pair = Pair()
    sid = closed_by_exchange(pair)
    assert pair.to_server(data_frame(sid, b"late")) == []
    assert rsts_of(pair.server.data_to_send()) == [(sid, STREAM_CLOSED)]


# -- 5.1.2 concurrency ----------------------------------------------------------------


def test_burst_over_the_limit_is_refused_h2spec_style() -> None:
    """h2spec 5.1.2: INITIAL_WINDOW_SIZE 0, then MAX_CONCURRENT_STREAMS + 1 requests
    with END_STREAM in one write: the last is refused, though the application answers
    the others as soon as it hears of them."""
    pair = Pair(H2Config(max_concurrent_streams=3), client_settings={S.INITIAL_WINDOW_SIZE: 0})
    burst = b"".join(raw_request(pair, sid) for sid in (1, 3, 5, 7))
    events = pair.to_server(burst)
    assert [e.stream_id for e in of_type(events, RequestReceived)] == [1, 3, 5]
    for e in of_type(events, RequestReceived):
        pair.server.send_headers(e.stream_id, RESPONSE_BLOCK, end_stream=True)
    assert rsts_of(pair.server.data_to_send()) == [(7, REFUSED_STREAM)]
    assert pair.server.invariant_violations() == []


def test_streams_answered_but_open_on_the_client_side_still_count() -> None:
    """Trailers-only answers close our side only: until the client ends its side the
    stream is half-closed (local) and counts against the limit."""
    pair = Pair(H2Config(max_concurrent_streams=3))
    sids = [pair.request(body=None, end_stream=False) for _ in range(3)]
    pair.pump()
    for sid in sids:
        pair.server.send_headers(sid, TRAILERS_ONLY, end_stream=True)
    pair.pump()
    assert pair.server.open_stream_count == 3
    assert pair.to_server(raw_request(pair, 7, end_stream=False)) == []
    assert rsts_of(pair.server.data_to_send()) == [(7, REFUSED_STREAM)]
    # Once the client ends one of them, that slot is free.
    pair.to_server(data_frame(sids[0], b"", end_stream=True))
    assert pair.server.open_stream_count == 2
    events = pair.to_server(raw_request(pair, 9))
    assert [type(e) for e in events] == [RequestReceived]
    assert pair.server.invariant_violations() == []


def test_streams_ended_by_the_client_but_not_answered_still_count() -> None:
    """Half-closed (remote): the client sent END_STREAM, our response is held back by
    its zero window."""
    pair = Pair(H2Config(max_concurrent_streams=2), client_settings={S.INITIAL_WINDOW_SIZE: 0})
    sids = [pair.request(body=None) for _ in range(2)]
    pair.pump()
    for sid in sids:
        pair.server.send_headers(sid, RESPONSE_BLOCK)
        pair.server.send_data(sid, b"blocked")
        pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
    pair.pump()
    assert pair.server.open_stream_count == 2
    assert pair.to_server(raw_request(pair, 5)) == []
    assert rsts_of(pair.server.data_to_send()) == [(5, REFUSED_STREAM)]


def test_refused_and_reset_streams_free_their_slots() -> None:
    pair = Pair(H2Config(max_concurrent_streams=2))
    a = pair.request(body=None, end_stream=False)
    b = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.to_server(rst_frame(a))
    pair.server.reset_stream(b, 0x8)
    assert pair.server.open_stream_count == 0
    events = pair.to_server(raw_request(pair, 5, end_stream=False) + raw_request(pair, 7, end_stream=False))
    assert [e.stream_id for e in of_type(events, RequestReceived)] == [5, 7]
    assert not of_type(events, StreamReset)
    assert goaway_of(pair.server.data_to_send()) is None


def test_priority_error_on_an_idle_stream_closes_it() -> None:
    """A PRIORITY frame that depends on itself, on a stream never opened, is reset
    (5.3.1); the stream is then closed, so HEADERS on it later opens nothing (found by
    fuzzing: it used to be opened while remembered as closed)."""
    server = raw_server()
    server.receive_data(frame(0x2, 0, 5, struct.pack(">IB", 5, 16)))
    assert rsts_of(server.data_to_send()) == [(5, PROTOCOL_ERROR)]
    assert server.receive_data(headers_frame(5, end_stream=True)) == []
    assert server.invariant_violations() == []
    assert not server.stream_is_open(5)
    assert [type(e) for e in server.receive_data(headers_frame(7, end_stream=True))] == [RequestReceived]
    events = server.receive_data(headers_frame(3))  # skipped: never opened
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == PROTOCOL_ERROR
