"""Handshake, request/response exchanges, HPACK, CONTINUATION, padding, PRIORITY."""

from __future__ import annotations

import struct

import h2.events
import hpack
from h2_helpers import (
    REQUEST,
    REQUEST_BLOCK,
    RESPONSE_BLOCK,
    TRAILERS_BLOCK,
    Pair,
    data_frame,
    frame,
    headers_frame,
    of_type,
    parse_frames,
    ping_frame,
    raw_server,
    settings_frame,
)

from puregrpc._h2.connection import PREFACE, H2Config, H2Connection
from puregrpc._h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcked,
    RequestReceived,
    StreamReset,
    TrailersReceived,
)
from puregrpc._h2.hpack_encoder import encode_headers


def test_handshake_settings_and_window() -> None:
    server = H2Connection(H2Config(header_table_size=8192))
    server.initiate_connection()
    frames = parse_frames(server.data_to_send())
    assert [f[0] for f in frames] == [0x4, 0x8]
    payload = frames[0][3]
    settings = dict(struct.unpack(">HI", payload[i : i + 6]) for i in range(0, len(payload), 6))
    assert settings == {3: 1000, 4: 1 << 20, 5: 16384, 6: 16384, 2: 0, 1: 8192}
    assert struct.unpack(">I", frames[1][3])[0] == (1 << 24) - 65535


def test_handshake_with_h2_client() -> None:
    pair = Pair()
    changed = of_type(pair.client_events, h2.events.RemoteSettingsChanged)
    assert changed and changed[0].changed_settings[3].new_value == 1000
    assert of_type(pair.client_events, h2.events.SettingsAcknowledged)
    assert pair.client.outbound_flow_control_window == 1 << 24
    assert not pair.server.terminated
    assert pair.server_events == []


def test_header_table_size_default_not_sent() -> None:
    server = H2Connection()
    server.initiate_connection()
    payload = parse_frames(server.data_to_send())[0][3]
    assert 1 not in [struct.unpack(">H", payload[i : i + 2])[0] for i in range(0, len(payload), 6)]


def test_preface_split_byte_by_byte() -> None:
    server = H2Connection()
    server.initiate_connection()
    data = PREFACE + settings_frame() + headers_frame(1, end_stream=True)
    events = []
    for i in range(len(data)):
        events += server.receive_data(data[i : i + 1])
    assert [type(e) for e in events] == [RequestReceived]
    assert events[0].end_stream


def test_unary_exchange() -> None:
    pair = Pair()
    sid = pair.request(body=b"hello")
    events, _ = pair.pump()
    assert events == [
        RequestReceived(sid, REQUEST, False),
        DataReceived(sid, b"hello", 5, True),
    ]
    assert pair.server.last_stream_id == sid
    assert pair.server.open_stream_count == 1  # half-closed (remote)
    pair.respond(sid, b"world")
    _, client_events = pair.pump()
    kinds = [type(e) for e in client_events]
    assert kinds == [
        h2.events.ResponseReceived,
        h2.events.DataReceived,
        h2.events.TrailersReceived,
        h2.events.StreamEnded,
    ]
    assert client_events[0].headers[0] == (b":status", b"200")
    assert client_events[1].data == b"world"
    assert client_events[2].headers == [(b"grpc-status", b"0")]
    assert pair.server.open_stream_count == 0


def test_many_sequential_and_concurrent_requests() -> None:
    pair = Pair()
    sids = [pair.request(body=b"m%d" % i) for i in range(50)]
    events, _ = pair.pump()
    assert len(of_type(events, RequestReceived)) == 50
    for sid in sids:
        pair.respond(sid, b"r%d" % sid)
    _, client_events = pair.pump()
    assert len(of_type(client_events, h2.events.StreamEnded)) == 50
    assert pair.server.open_stream_count == 0
    assert pair.server.last_stream_id == sids[-1]


def test_client_streaming_with_trailers() -> None:
    pair = Pair()
    sid = pair.request(body=b"a", end_stream=False)
    pair.client.send_data(sid, b"b")
    pair.client.send_headers(sid, [("x-trailer", "1")], end_stream=True)
    events, _ = pair.pump()
    # Both DATA frames came in one read: one event (see test_h2_data_runs.py).
    assert [type(e) for e in events] == [
        RequestReceived,
        DataReceived,
        TrailersReceived,
    ]
    assert isinstance(events[1], DataReceived) and events[1].data == b"ab"
    assert events[-1] == TrailersReceived(sid, [("x-trailer", "1")])


def test_huffman_and_dynamic_table_request_headers() -> None:
    pair = Pair()
    headers = [*REQUEST, ("x-custom", "value-é-long-" * 3), ("user-agent", "grpc-python/1.60")]
    first = pair.request(headers=headers, body=None)
    second = pair.request(headers=headers, body=None)  # now indexed from the dynamic table
    events, _ = pair.pump()
    got = of_type(events, RequestReceived)
    assert len(got) == 2
    # latin-1 decoding: every byte round-trips.
    expected = [(n, v.encode("utf-8").decode("latin-1")) for n, v in headers]
    assert got[0].headers == expected and got[0].stream_id == first
    assert got[1].headers == expected and got[1].stream_id == second
    assert got[0].headers is not got[1].headers


def test_read_only_block_cache_follows_table_changes() -> None:
    """The same indexed-only bytes mean other headers once the dynamic table changed."""
    server = raw_server()
    encoder = hpack.Encoder()
    reference = hpack.Decoder()
    pseudo = [(b":method", b"POST"), (b":scheme", b"http")]
    block1 = encoder.encode([*pseudo, (b":path", b"/a"), (b"x-v", b"1")])
    indexed = encoder.encode([*pseudo, (b":path", b"/a"), (b"x-v", b"1")])
    assert all(b >= 0x80 for b in indexed)  # only indexed fields: cacheable
    block2 = encoder.encode([*pseudo, (b":path", b"/b")])  # inserts into the table
    expected = [reference.decode(b) for b in (block1, indexed, indexed, block2, indexed)]
    got = []
    for sid, block in zip((1, 3, 5, 7, 9), (block1, indexed, indexed, block2, indexed)):
        got += server.receive_data(headers_frame(sid, block, end_stream=True))
    assert [e.headers for e in got[:4]] == expected[:4]
    # Decoded afresh: the shifted indices now put :path after x-v, which is malformed.
    assert expected[4] == [(":method", "POST"), (":scheme", "http"), ("x-v", "1"), (":path", "/b")]
    assert got[4] == StreamReset(9, 1, False)


def test_requests_with_the_same_cached_block_share_one_memo() -> None:
    """RequestReceived.memo: one list for every request whose header block is a cached
    one, byte for byte; a new list once the table changed; for a block decoded afresh
    (it may have changed the table), None, or the memo of its leading indexed fields
    where those are a valid request on their own."""
    server = raw_server()
    encoder = hpack.Encoder()
    pseudo = [(b":method", b"POST"), (b":scheme", b"http")]
    first = encoder.encode([*pseudo, (b":path", b"/a"), (b"x-v", b"1")])
    indexed = encoder.encode([*pseudo, (b":path", b"/a"), (b"x-v", b"1")])
    other = encoder.encode([*pseudo, (b":path", b"/a"), (b"x-v", b"2")])  # inserts x-v: 2
    indexed_other = encoder.encode([*pseudo, (b":path", b"/a"), (b"x-v", b"2")])
    indexed_again = encoder.encode([*pseudo, (b":path", b"/a"), (b"x-v", b"1")])
    blocks = (first, indexed, indexed, other, indexed_other, indexed_other, indexed_again)
    got: list[Event] = []
    for sid, block in zip(range(1, 100, 2), blocks):
        got += server.receive_data(headers_frame(sid, block, end_stream=True))
    memos = [event.memo for event in of_type(got, RequestReceived)]
    covered = [event.memo_fields for event in of_type(got, RequestReceived)]
    assert len(memos) == 7
    assert memos[0] is None and covered[0] == 0  # :path inserted: no indexed start
    assert memos[1] == [None] and memos[1] is memos[2] and covered[1:3] == [4, 4]
    # x-v: 2 inserted after three indexed fields, a valid request: their memo only.
    assert covered[3] == 3 and memos[3] is not None
    assert memos[3] is not memos[1] and memos[3] is not memos[4]
    assert memos[4] is memos[5] and memos[4] is not memos[1]
    # x-v: 1 again, its indices shifted by the insert: other bytes, a memo of its own.
    assert memos[6] is not None and memos[6] is not memos[1]
    assert [dict(e.headers)["x-v"] for e in of_type(got, RequestReceived)] == ["1", "1", "1", "2", "2", "2", "1"]


def test_large_request_headers_arrive_in_continuation() -> None:
    config = H2Config(max_header_list_size=200_000)
    pair = Pair(config)
    big = [*REQUEST, ("x-big", "v" * 40_000)]
    sid = pair.request(headers=big, body=None)
    raw = pair.client.data_to_send()
    assert 0x9 in [f[0] for f in parse_frames(raw)]
    events = pair.to_server(raw)
    assert events == [RequestReceived(sid, big, True)]


def test_large_response_headers_sent_in_continuation() -> None:
    pair = Pair()
    sid = pair.request(body=None)
    pair.pump()
    block = encode_headers([(b":status", b"200"), (b"x-big", b"v" * 40_000)])
    pair.server.send_headers(sid, block, end_stream=True)
    out = pair.server.data_to_send()
    frames = parse_frames(out)
    assert [f[0] for f in frames] == [0x1, 0x9, 0x9]
    assert [f[1] & 0x4 for f in frames] == [0, 0, 0x4]
    assert frames[0][1] & 0x1  # END_STREAM on the HEADERS frame
    assert all(len(f[3]) <= 16384 for f in frames)
    events = pair.client.receive_data(out)
    response = of_type(events, h2.events.ResponseReceived)[0]
    assert dict(response.headers)[b"x-big"] == b"v" * 40_000
    assert of_type(events, h2.events.StreamEnded)


def test_response_split_by_peer_max_frame_size() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.MAX_FRAME_SIZE: 65536})
    sid = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"x" * 60000, end_stream=True)
    frames = parse_frames(pair.server.data_to_send())
    assert [len(f[3]) for f in frames if f[0] == 0] == [60000]


def test_padded_data_and_headers() -> None:
    pair = Pair()
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.client.send_data(sid, b"abc", pad_length=10)
    pair.client.send_data(sid, b"", end_stream=True, pad_length=0)
    events, _ = pair.pump()
    assert events == [DataReceived(sid, b"abc", 14, False), DataReceived(sid, b"", 1, True)]
    # Padded HEADERS with PRIORITY, raw (h2 does not pad HEADERS).
    server = raw_server()
    payload = bytes([5]) + struct.pack(">IB", 0, 15) + REQUEST_BLOCK + b"\0" * 5
    events = server.receive_data(frame(0x1, 0x4 | 0x1 | 0x8 | 0x20, 1, payload))
    assert [type(e) for e in events] == [RequestReceived]


def test_priority_frames_and_flags_are_ignored() -> None:
    pair = Pair()
    sid = pair.request(body=None, end_stream=False)
    pair.client.prioritize(sid, weight=200)
    pair.client.prioritize(sid + 2, weight=10, depends_on=sid)  # idle stream: allowed
    pair.client.send_data(sid, b"x", end_stream=True)
    events, _ = pair.pump()
    assert [type(e) for e in events] == [RequestReceived, DataReceived]
    assert not pair.server.data_to_send()


def test_unknown_frame_types_and_flags_ignored() -> None:
    server = raw_server()
    events = server.receive_data(
        frame(0xFA, 0xFF, 0, b"whatever")
        + frame(0x1, 0x4 | 0x40 | 0x2, 1, REQUEST_BLOCK)  # unknown flags on HEADERS
        + frame(0xFB, 0, 1, b"x")
        + data_frame(1, b"z", end_stream=True)
    )
    assert [type(e) for e in events] == [RequestReceived, DataReceived]
    assert not server.terminated


def test_ping_is_acked_and_ours_reported() -> None:
    pair = Pair()
    pair.client.ping(b"abcdefgh")
    events, client_events = pair.pump()
    assert events == []
    assert of_type(client_events, h2.events.PingAckReceived)[0].ping_data == b"abcdefgh"
    pair.server.ping(b"12345678")
    events, client_events = pair.pump()
    assert events == [PingAcked(b"12345678")]
    assert of_type(client_events, h2.events.PingReceived)


def test_goaway_from_peer_reported() -> None:
    pair = Pair()
    sid = pair.request(body=None)
    pair.client.close_connection(error_code=0, additional_data=b"bye", last_stream_id=0)
    events, _ = pair.pump()
    assert events[-1] == GoAwayReceived(0, 0, b"bye")
    assert events[0].stream_id == sid


def test_server_reset_stream_drops_queue_and_reports_nothing() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    sid = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"x" * 100)
    assert pair.server.pending_bytes(sid) == 90
    pair.server.reset_stream(sid, 8)
    assert pair.server.pending_bytes(sid) == 0
    assert pair.server.open_stream_count == 0
    server_events, client_events = pair.pump()
    assert of_type(client_events, h2.events.StreamReset)[0].error_code == 8
    assert server_events == []
    # Commands on the reset stream are ignored.
    pair.server.send_data(sid, b"late")
    pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
    assert pair.server.data_to_send() == b""


def test_peer_reset_reported_and_queue_dropped() -> None:
    pair = Pair(client_settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"x" * 100)
    pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
    pair.pump()
    pair.client.reset_stream(sid, 8)
    events, _ = pair.pump()
    assert events == [StreamReset(sid, 8, True)]
    assert pair.server.open_stream_count == 0
    assert pair.server.pending_bytes(sid) == 0


def test_send_after_end_stream_raises() -> None:
    pair = Pair()
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK, end_stream=True)
    try:
        pair.server.send_data(sid, b"x")
    except RuntimeError:
        pass
    else:
        raise AssertionError("expected RuntimeError")


def test_half_closed_local_keeps_receiving() -> None:
    pair = Pair()
    sid = pair.request(body=b"a", end_stream=False)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
    pair.pump()
    assert pair.server.open_stream_count == 1  # half-closed (local)
    pair.client.send_data(sid, b"b", end_stream=True)
    events, _ = pair.pump()
    assert events == [DataReceived(sid, b"b", 1, True)]
    assert pair.server.open_stream_count == 0


def test_connection_terminated_is_last_and_input_ignored_after() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1, end_stream=True))
    events = server.receive_data(headers_frame(3) + frame(0x5, 0x4, 3, b"\0\0\0\x02") + ping_frame())
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].error_code == 1
    out = server.data_to_send()
    assert parse_frames(out)[-1][0] == 0x7
    assert server.terminated
    assert server.receive_data(ping_frame()) == []
    assert server.data_to_send() == b""


def test_unused_request_helper_block_is_valid() -> None:
    assert hpack.Decoder().decode(REQUEST_BLOCK)[0] == (":method", "POST")
