"""Consecutive DATA frames of one stream in one read are reported as one DataReceived.

The engine joins them (``frames.data_run``) because a large message arrives in many
16 KiB frames and each event costs more than its bytes. What must not change: the
bytes, their order, flow-control accounting (``flow_length`` is the sum, padding
included, so acknowledging it reopens exactly what was used), END_STREAM, and every
per-frame check (size, window, padding, empty frames, content-length).
"""

from __future__ import annotations

import struct
from typing import List, Optional, Tuple

import pytest
from h2_helpers import REQUEST_FIELDS, data_frame, frame, headers_frame, of_type, parse_frames, raw_server

from puregrpc._h2.connection import H2Config, H2Connection
from puregrpc._h2.events import ConnectionTerminated, DataReceived, Event, StreamReset
from puregrpc._h2.frames import VIEW_RUN, data_run
from puregrpc._h2.hpack_encoder import encode_headers


def opened(sids: List[int], config: Optional[H2Config] = None) -> H2Connection:
    server = raw_server(config)
    server.receive_data(b"".join(headers_frame(sid) for sid in sids))
    server.data_to_send()
    return server


def data_events(events: List[Event]) -> List[Tuple[int, bytes, int, bool]]:
    return [(e.stream_id, e.data, e.flow_length, e.end_stream) for e in of_type(events, DataReceived)]


def test_consecutive_frames_of_a_stream_are_one_event() -> None:
    server = opened([1])
    chunks = [bytes([i]) * 1000 for i in range(5)]
    events = server.receive_data(b"".join(data_frame(1, c) for c in chunks))
    assert data_events(events) == [(1, b"".join(chunks), 5000, False)]


def test_end_stream_ends_the_run_and_is_reported() -> None:
    server = opened([1])
    events = server.receive_data(data_frame(1, b"ab") + data_frame(1, b"cd", end_stream=True))
    assert data_events(events) == [(1, b"abcd", 4, True)]
    # The stream is half-closed: more DATA on it is a stream error, not joined data.
    events = server.receive_data(data_frame(1, b"late"))
    assert data_events(events) == []
    assert [(e.stream_id, e.error_code) for e in of_type(events, StreamReset)] == [(1, 0x5)]


def test_runs_stop_at_another_stream_and_keep_order() -> None:
    server = opened([1, 3])
    wire = data_frame(1, b"a") + data_frame(1, b"b") + data_frame(3, b"x") + data_frame(1, b"c") + data_frame(3, b"y")
    events = server.receive_data(wire)
    assert data_events(events) == [(1, b"ab", 2, False), (3, b"x", 1, False), (1, b"c", 1, False), (3, b"y", 1, False)]


def test_padded_and_empty_frames_are_handled_alone() -> None:
    server = opened([1])
    padded = frame(0x0, 0x8, 1, bytes([3]) + b"pp" + b"\0" * 3)  # 2 data bytes, 6 flow
    empty = data_frame(1, b"")
    events = server.receive_data(data_frame(1, b"a") + padded + data_frame(1, b"b") + empty + data_frame(1, b"c"))
    assert data_events(events) == [
        (1, b"a", 1, False),
        (1, b"pp", 6, False),
        (1, b"b", 1, False),
        (1, b"", 0, False),
        (1, b"c", 1, False),
    ]


def test_a_frame_cut_by_the_read_ends_the_run() -> None:
    server = opened([1])
    wire = data_frame(1, b"a" * 100) + data_frame(1, b"b" * 100) + data_frame(1, b"c" * 100)
    cut = len(wire) - 50
    first = server.receive_data(wire[:cut])
    second = server.receive_data(wire[cut:])
    assert data_events(first) == [(1, b"a" * 100 + b"b" * 100, 200, False)]
    assert data_events(second) == [(1, b"c" * 100, 100, False)]


def test_acknowledging_a_run_reopens_exactly_what_it_used() -> None:
    config = H2Config(initial_window_size=65535, connection_window_size=65535)
    server = opened([1], config)
    events = server.receive_data(b"".join(data_frame(1, b"z" * 16000) for _ in range(4)))
    (event,) = of_type(events, DataReceived)
    assert event.flow_length == 64000
    server.acknowledge_received_data(1, event.flow_length)
    frames = parse_frames(server.data_to_send())
    increments = {sid: struct.unpack(">I", payload)[0] for ftype, _, sid, payload in frames if ftype == 0x8}
    assert increments == {0: 64000, 1: 64000}
    assert server.invariant_violations() == []


def test_a_run_past_the_stream_window_resets_the_stream() -> None:
    config = H2Config(initial_window_size=65535)
    server = opened([1], config)
    events = server.receive_data(b"".join(data_frame(1, b"z" * 16384) for _ in range(5)))  # 81,920 > 65,535
    assert data_events(events) == []
    assert [(e.stream_id, e.error_code) for e in of_type(events, StreamReset)] == [(1, 0x3)]  # FLOW_CONTROL_ERROR
    assert server.invariant_violations() == []


def test_content_length_is_checked_over_the_run() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1, encode_headers([*REQUEST_FIELDS, (b"content-length", b"3")])))
    events = server.receive_data(data_frame(1, b"ab") + data_frame(1, b"cd", end_stream=True))
    assert data_events(events) == []
    assert [(e.stream_id, e.error_code) for e in of_type(events, StreamReset)] == [(1, 0x1)]  # PROTOCOL_ERROR


def test_an_oversized_frame_after_a_run_is_still_a_frame_size_error() -> None:
    server = opened([1])
    oversized = struct.pack(">IBI", (16385 << 8) | 0x0, 0, 1)  # header only: refused from it
    events = server.receive_data(data_frame(1, b"a") + data_frame(1, b"b") + oversized)
    assert data_events(events) == [(1, b"ab", 2, False)]
    (terminated,) = of_type(events, ConnectionTerminated)
    assert terminated.error_code == 0x6  # FRAME_SIZE_ERROR


def test_data_run_takes_only_whole_unpadded_frames_of_the_stream() -> None:
    wire = data_frame(1, b"a") + data_frame(1, b"bc") + frame(0x0, 0x8, 1, b"\0x") + data_frame(1, b"d")
    end, flags, payload = data_run(wire, 9, 10, len(wire), 1, 16384)
    assert (end, flags, payload) == (len(data_frame(1, b"a")) + len(data_frame(1, b"bc")), 0, b"abc")
    # Cut inside the second frame: the run is the first frame alone.
    end, flags, payload = data_run(wire, 9, 10, 15, 1, 16384)
    assert (end, flags, payload) == (10, 0, b"a")


def test_a_long_run_is_reported_as_views_of_the_bytes_read() -> None:
    """A run of VIEW_RUN bytes or more is not copied: its pieces look into the read,
    one per frame; ``data`` is their join, and the flow and the checks are as for bytes."""
    server = opened([1])
    chunks = [bytes([i]) * 16384 for i in range(3)]
    wire = b"".join(data_frame(1, c) for c in chunks[:2]) + data_frame(1, chunks[2], end_stream=True)
    assert sum(map(len, chunks)) >= VIEW_RUN
    (event,) = of_type(server.receive_data(wire), DataReceived)
    assert event.pieces is not None and len(event.pieces) == 3
    assert all(piece.obj is wire for piece in event.pieces)
    assert [bytes(piece) for piece in event.pieces] == chunks
    assert (event.data, event.flow_length, event.end_stream) == (b"".join(chunks), 3 * 16384, True)
    assert server.invariant_violations() == []


def test_a_short_run_is_bytes() -> None:
    server = opened([1])
    (event,) = of_type(server.receive_data(data_frame(1, b"a" * 1000) + data_frame(1, b"b" * 1000)), DataReceived)
    assert event.pieces is None and event.data == b"a" * 1000 + b"b" * 1000


@pytest.mark.parametrize("declared", [3 * 16384 - 1, 3 * 16384])
def test_content_length_is_checked_over_a_run_of_views(declared: int) -> None:
    server = raw_server()
    server.receive_data(
        headers_frame(1, encode_headers([*REQUEST_FIELDS, (b"content-length", str(declared).encode())]))
    )
    wire = b"".join(data_frame(1, b"z" * 16384) for _ in range(2)) + data_frame(1, b"z" * 16384, end_stream=True)
    events = server.receive_data(wire)
    if declared == 3 * 16384:
        assert data_events(events) == [(1, b"z" * declared, declared, True)]
        assert of_type(events, StreamReset) == []
    else:
        assert data_events(events) == []
        assert [(e.stream_id, e.error_code) for e in of_type(events, StreamReset)] == [(1, 0x1)]  # PROTOCOL_ERROR
