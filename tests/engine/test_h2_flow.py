"""Flow control in both directions (RFC 9113 sections 5.2 and 6.9)."""

from __future__ import annotations

import struct

import h2.events
import h2.settings
import pytest
from h2_helpers import (
    RESPONSE_BLOCK,
    TRAILERS_BLOCK,
    Pair,
    data_frame,
    goaway_of,
    headers_frame,
    of_type,
    parse_frames,
    raw_server,
    rsts_of,
    settings_frame,
    window_update_frame,
)

from puregrpc._h2.connection import H2Config
from puregrpc._h2.events import ConnectionTerminated, DataReceived, StreamReset, WindowUpdated

S = h2.settings.SettingCodes
MAX = (1 << 31) - 1


def window_updates(data: bytes) -> dict[int, int]:
    out: dict[int, int] = {}
    for ftype, _, sid, payload in parse_frames(data):
        if ftype == 0x8:
            out[sid] = out.get(sid, 0) + struct.unpack(">I", payload)[0]
    return out


# -- inbound ---------------------------------------------------------------------


def test_no_refill_until_acknowledged_then_batched() -> None:
    config = H2Config(initial_window_size=65535, connection_window_size=65535 * 4)
    pair = Pair(config)
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    for _ in range(4):
        pair.client.send_data(sid, b"x" * 16000)
    events, _ = pair.pump()
    assert sum(e.flow_length for e in of_type(events, DataReceived)) == 64000
    assert pair.server.data_to_send() == b""  # nothing acknowledged yet
    assert pair.client.local_flow_control_window(sid) == 1535
    pair.server.acknowledge_received_data(sid, 16000)
    assert pair.server.data_to_send() == b""  # below half the window: batched
    pair.server.acknowledge_received_data(sid, 32000)
    updates = window_updates(pair.server.data_to_send())
    assert updates == {sid: 48000}
    pair.server.acknowledge_received_data(sid, 16000)
    pair.server.acknowledge_received_data(sid, 200_000)  # over-acknowledging is harmless
    assert pair.server._conn_recv_window <= MAX


def test_connection_window_refilled_for_closed_streams() -> None:
    config = H2Config(initial_window_size=65535, connection_window_size=65535)
    pair = Pair(config)
    sid = pair.request(body=None, end_stream=False)
    for _ in range(4):
        pair.client.send_data(sid, b"y" * 10000)
    pair.pump()
    pair.server.reset_stream(sid, 8)
    pair.server.acknowledge_received_data(sid, 40000)
    assert window_updates(pair.server.data_to_send()) == {0: 40000}


def test_stream_window_exceeded_is_stream_error() -> None:
    server = raw_server(H2Config(initial_window_size=100))
    server.receive_data(headers_frame(1))
    events = server.receive_data(data_frame(1, b"x" * 101))
    assert events == [StreamReset(1, 3, False)]
    assert rsts_of(server.data_to_send()) == [(1, 3)]
    assert not server.terminated


def test_stream_window_before_settings_ack_allows_default() -> None:
    """Until our SETTINGS are acknowledged the peer may use the 65535 default."""
    from puregrpc._h2.connection import PREFACE, H2Connection

    server = H2Connection(H2Config(initial_window_size=100))
    server.initiate_connection()
    server.receive_data(PREFACE + settings_frame() + headers_frame(1))
    assert of_type(server.receive_data(data_frame(1, b"x" * 1000)), DataReceived)
    server.receive_data(settings_frame(ack=True))
    server.receive_data(headers_frame(3))
    assert server.receive_data(data_frame(3, b"x" * 101)) == [StreamReset(3, 3, False)]


def test_connection_window_exceeded_is_connection_error() -> None:
    server = raw_server(H2Config(connection_window_size=65535, initial_window_size=MAX))
    events = []
    for sid in (1, 3, 5, 7, 9):
        events += server.receive_data(headers_frame(sid) + data_frame(sid, b"x" * 16000))
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].error_code == 3
    assert goaway_of(server.data_to_send())[1] == 3  # type: ignore[index]


def test_padding_counts_against_windows() -> None:
    server = raw_server(H2Config(initial_window_size=100))
    server.receive_data(headers_frame(1))
    padded = struct.pack(">B", 60) + b"x" * 30 + b"\0" * 60
    from h2_helpers import frame

    events = server.receive_data(frame(0x0, 0x8, 1, padded))
    assert events == [DataReceived(1, b"x" * 30, 91, False)]
    assert server.receive_data(data_frame(1, b"x" * 10)) == [StreamReset(1, 3, False)]


# -- outbound --------------------------------------------------------------------


def test_send_respects_stream_window_and_resumes() -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 1000})
    sid = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"a" * 2500)
    pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)  # queued behind data
    assert pair.server.pending_bytes(sid) == 1500
    _, client_events = pair.pump()
    assert sum(len(e.data) for e in of_type(client_events, h2.events.DataReceived)) == 1000
    assert not of_type(client_events, h2.events.TrailersReceived)
    got = 1000
    while got < 2500:
        pair.client.acknowledge_received_data(1000, sid)
        server_events, client_events = pair.pump()
        got += sum(len(e.data) for e in of_type(client_events, h2.events.DataReceived))
        # Reported while the stream still has something to send.
        assert (WindowUpdated(sid) in server_events) == (got < 2500)
    assert of_type(client_events, h2.events.TrailersReceived)
    assert of_type(client_events, h2.events.StreamEnded)
    assert pair.server.open_stream_count == 0


def test_send_data_returns_what_waits_for_window() -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 1000})
    sid = pair.request(body=None)
    pair.pump()
    server = pair.server
    server.send_headers(sid, RESPONSE_BLOCK)
    assert server.send_data(sid, b"a" * 400) == 0 == server.pending_bytes(sid)  # all sent now
    assert server.send_data(sid, b"b" * 900) == 300 == server.pending_bytes(sid)  # the window took 600
    assert server.send_data(sid, b"c" * 50) == 350 == server.pending_bytes(sid)  # queued behind
    assert server.send_data(sid + 2, b"d" * 10) == 0  # no such stream: nothing queued
    pair.pump()
    pair.client.acknowledge_received_data(1000, sid)
    pair.pump()
    assert server.send_data(sid, b"e" * 10) == 0 == server.pending_bytes(sid)  # the window drained it


def test_zero_window_stall_then_resume_with_end_stream_on_data() -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 0})
    sid = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"z" * 10, end_stream=True)
    frames = parse_frames(pair.server.data_to_send())
    assert [f[0] for f in frames] == [0x1]  # headers only; data stalls
    assert pair.server.pending_bytes(sid) == 10
    assert pair.server.open_stream_count == 1
    pair.to_server(window_update_frame(sid, 4))
    frames = parse_frames(pair.server.data_to_send())
    assert [(f[0], f[1], len(f[3])) for f in frames] == [(0x0, 0, 4)]
    pair.to_server(window_update_frame(sid, 100))
    frames = parse_frames(pair.server.data_to_send())
    assert [(f[0], f[1], len(f[3])) for f in frames] == [(0x0, 1, 6)]
    assert pair.server.open_stream_count == 0


def test_empty_end_stream_with_negative_window() -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 10})
    sid = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"z" * 10)
    pair.to_server(settings_frame((4, 0)))  # window now 0 - 10... stays at 0 here
    pair.server.send_data(sid, b"", end_stream=True)  # zero-length: not flow controlled
    frames = parse_frames(pair.server.data_to_send())
    assert (0x0, 1, 0) in [(f[0], f[1], len(f[3])) for f in frames]


def test_settings_window_change_adjusts_streams() -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 100})
    sid = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"q" * 300)
    pair.pump()
    assert pair.server.stream_send_window(sid) == 0
    pair.client.update_settings({S.INITIAL_WINDOW_SIZE: 50})
    pair.pump()
    assert pair.server.stream_send_window(sid) == -50
    pair.client.update_settings({S.INITIAL_WINDOW_SIZE: 400})
    pair.pump()
    assert pair.server.pending_bytes(sid) == 0
    assert pair.server.stream_send_window(sid) == 100
    assert sum(len(e.data) for e in of_type(pair.client_events, h2.events.DataReceived)) == 300


def test_peer_max_frame_size_bounds_data_frames() -> None:
    pair = Pair()
    sid = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"d" * 40000, end_stream=True)
    sizes = [len(f[3]) for f in parse_frames(pair.server.data_to_send()) if f[0] == 0]
    assert sizes == [16384, 16384, 40000 - 32768]


@pytest.mark.parametrize("size", [32768, 32769, 65535, 3 * 16384 + 1, 1 << 20])
def test_large_data_is_cut_into_full_frames_with_end_stream_on_the_last(size: int) -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: MAX})
    pair.client.increment_flow_control_window(MAX - 65535)
    sid = pair.request(body=None)
    pair.pump()
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, payload, end_stream=True)
    frames = [f for f in parse_frames(pair.server.data_to_send()) if f[0] == 0]
    full, rest = divmod(size, 16384)
    expected = [16384] * full + ([rest] if rest else [])
    assert [len(f[3]) for f in frames] == expected
    assert [f[1] & 0x1 for f in frames] == [0] * (len(expected) - 1) + [1]
    assert b"".join(f[3] for f in frames) == payload


def test_large_data_goes_out_as_views_of_the_callers_bytes_in_order() -> None:
    """A peer allowing 16 MiB frames (as grpc's clients do): large DATA still leaves as
    views of the caller's bytes, never copied into the output buffer, and the parts come
    in order with the small frames and headers queued around it."""
    pair = Pair(client_settings={S.MAX_FRAME_SIZE: (1 << 24) - 1, S.INITIAL_WINDOW_SIZE: MAX})
    pair.client.increment_flow_control_window(MAX - 65535)
    sid = pair.request(body=None)
    pair.pump()
    large = bytes(range(256)) * 4096  # 1 MiB
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"small")
    pair.server.send_data(sid, large)
    pair.server.send_data(sid, b"after")
    pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
    parts = pair.server.parts_to_send()
    views = [p for p in parts if isinstance(p, memoryview)]
    assert views and all(v.obj is large for v in views)
    assert sum(len(v) for v in views) == len(large)
    assert pair.server.parts_to_send() == [] and pair.server.data_to_send() == b""
    frames = parse_frames(b"".join(parts))
    assert [(f[0], f[2]) for f in frames] == [(0x1, sid), (0x0, sid), (0x0, sid), (0x0, sid), (0x1, sid)]
    assert [f[3] for f in frames if f[0] == 0] == [b"small", large, b"after"]
    events = pair.client.receive_data(b"".join(parts))
    assert b"".join(e.data for e in of_type(events, h2.events.DataReceived)) == b"small" + large + b"after"
    assert of_type(events, h2.events.StreamEnded)


def test_large_data_held_back_by_a_small_window_still_leaves_as_views() -> None:
    """1 MiB through the default 64 KiB windows: the part held back waits as a view of
    the caller's bytes (send_queue), so every byte of it leaves as one, in order, frame
    by frame as the client's WINDOW_UPDATEs come."""
    pair = Pair()
    sid = pair.request(body=None)
    pair.pump()
    large = bytes(range(256)) * 4096
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"\x00" + len(large).to_bytes(4, "big"))  # a gRPC prefix
    pair.server.send_data(sid, large, end_stream=True)
    assert pair.server.pending_bytes(sid) > len(large) - 65535
    viewed = 0
    received = bytearray()
    ended = False
    for _ in range(200):
        parts = pair.server.parts_to_send()
        if not parts:
            break
        for part in parts:
            if isinstance(part, memoryview):
                assert part.obj is large
                viewed += len(part)
        for event in pair.client.receive_data(b"".join(parts)):
            if isinstance(event, h2.events.DataReceived):
                received += event.data
                pair.client.acknowledge_received_data(event.flow_controlled_length, sid)
            ended = ended or isinstance(event, h2.events.StreamEnded)
        pair.to_server(pair.client.data_to_send())
    assert ended and bytes(received) == b"\x00" + len(large).to_bytes(4, "big") + large
    assert viewed == len(large)


def test_parts_and_joined_output_are_the_same_bytes() -> None:
    """parts_to_send() and data_to_send() take the same bytes: one connection's output
    split both ways, at 16 KiB frames (the default) and below and above SEND_VIEWS."""
    outputs = []
    for take in ("parts", "joined"):
        pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: MAX})
        pair.client.increment_flow_control_window(MAX - 65535)
        sid = pair.request(body=None)
        pair.pump()
        out = b""
        pair.server.send_headers(sid, RESPONSE_BLOCK)
        for size in (1, 16384, 16385, 32767, 32768, 100_000, 7):
            pair.server.send_data(sid, bytes([size % 251]) * size)
            if size == 32768:  # a take in the middle, then more
                out += b"".join(pair.server.parts_to_send()) if take == "parts" else pair.server.data_to_send()
        pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
        out += b"".join(pair.server.parts_to_send()) if take == "parts" else pair.server.data_to_send()
        outputs.append(out)
    assert outputs[0] == outputs[1]
    sizes = [len(f[3]) for f in parse_frames(outputs[0]) if f[0] == 0]
    assert sizes == [1, 16384, 16384, 1, 16384, 16383, 16384, 16384] + [16384] * 6 + [100_000 - 6 * 16384, 7]


def test_connection_window_fairness_round_robin() -> None:
    """Streams blocked on the connection window share it one frame at a time."""
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: MAX})
    sids = [pair.request(body=None) for _ in range(3)]
    pair.pump()
    server = pair.server
    for sid in sids:
        server.send_headers(sid, RESPONSE_BLOCK)
        server.send_data(sid, b"f" * 100_000, end_stream=True)
    first = [f for f in parse_frames(server.data_to_send()) if f[0] == 0]
    assert sum(len(f[3]) for f in first) == 65535  # the connection window
    assert server.outbound_window == 0
    order = []
    sent = {sid: 0 for sid in sids}
    sent[sids[0]] = 65535
    while any(server.pending_bytes(sid) for sid in sids):
        server.receive_data(window_update_frame(0, 16384))
        for ftype, _, sid, payload in parse_frames(server.data_to_send()):
            if ftype == 0:
                order.append(sid)
                sent[sid] += len(payload)
    assert sent == {sid: 100_000 for sid in sids}
    # Round robin, one frame per stream per turn: 1, 3, 5, 1, 3, 5, ...
    assert order[:9] == [sids[0], sids[1], sids[2]] * 3
    assert pair.server.open_stream_count == 0


def test_stream_blocked_on_own_window_does_not_block_others() -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 10})
    a = pair.request(body=None)
    b = pair.request(body=None)
    pair.pump()
    pair.server.send_headers(a, RESPONSE_BLOCK)
    pair.server.send_data(a, b"a" * 100)
    pair.server.send_headers(b, RESPONSE_BLOCK)
    pair.server.send_data(b, b"b" * 5, end_stream=True)
    _, client_events = pair.pump()
    ended = of_type(client_events, h2.events.StreamEnded)
    assert [e.stream_id for e in ended] == [b]
    assert pair.server.pending_bytes(a) == 90


def test_window_update_overflow_stream_and_connection() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    events = server.receive_data(window_update_frame(1, MAX))
    assert events == [StreamReset(1, 3, False)]
    events = server.receive_data(window_update_frame(0, MAX))
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == 3


def test_window_update_zero_increment() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    assert server.receive_data(window_update_frame(1, 0)) == [StreamReset(1, 1, False)]
    events = server.receive_data(window_update_frame(0, 0))
    assert events[-1] == ConnectionTerminated(1, "WINDOW_UPDATE of 0")


def test_settings_initial_window_overflow() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    server.receive_data(window_update_frame(1, MAX - 65535))
    events = server.receive_data(settings_frame((4, 70000)))
    assert isinstance(events[-1], ConnectionTerminated) and events[-1].error_code == 3


def test_window_updated_events() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    server.receive_data(headers_frame(3))
    # Nothing waits for window: a streaming peer's WINDOW_UPDATEs are news to nobody.
    assert server.receive_data(window_update_frame(1, 5) + window_update_frame(0, 5)) == []
    server.send_headers(1, RESPONSE_BLOCK)
    assert server.send_data(1, b"x" * 70000) == 70000 - 65540  # the stream's window: 65535 + 5
    server.data_to_send()
    # Stream 1's DATA waits: an update of its window, or of the connection's, is reported;
    # one of stream 3's, which has nothing waiting, is not.
    events = server.receive_data(window_update_frame(1, 10) + window_update_frame(3, 10) + window_update_frame(0, 5))
    assert events == [WindowUpdated(1), WindowUpdated(0)]
    # Reported when it let the waiting DATA go, too (the last time: nothing waits after).
    events = server.receive_data(window_update_frame(1, 10000) + window_update_frame(0, 10000))
    assert events == [WindowUpdated(1), WindowUpdated(0)]
    assert server.pending_bytes(1) == 0
    assert server.receive_data(window_update_frame(1, 10) + window_update_frame(0, 10)) == []
    # WINDOW_UPDATE on a closed stream is ignored.
    server.reset_stream(1, 8)
    assert server.receive_data(window_update_frame(1, 5)) == []


def test_repeated_initial_window_setting_applies_net_delta_once() -> None:
    server = raw_server()
    for sid in range(1, 1000, 2):
        server.receive_data(headers_frame(sid))
    assert server.receive_data(window_update_frame(0, 100000)) == []  # room on the connection
    server.send_headers(1, RESPONSE_BLOCK)
    assert server.send_data(1, b"x" * 65536) == 1  # one byte waits for the stream's window
    pairs = [(4, 1000 + i) for i in range(2000)] + [(4, 70000)]
    assert server.receive_data(settings_frame(*pairs)) == [WindowUpdated(0)]
    assert server.pending_bytes(1) == 0
    assert server.stream_send_window(1) == 70000 - 65536
    assert server.stream_send_window(999) == 70000
    # Grown again with nothing waiting: not reported.
    assert server.receive_data(settings_frame((4, 80000))) == []


def test_pending_total_counts_queued_data_across_streams() -> None:
    """``pending_total`` is what the layer above bounds per connection: DATA queued
    for lack of window, on every stream, back to 0 as it is sent or dropped."""
    server = raw_server()
    for sid in (1, 3, 5):
        server.receive_data(headers_frame(sid))
        server.send_headers(sid, RESPONSE_BLOCK)
    for sid in (1, 3, 5):
        server.send_data(sid, b"x" * 50000)  # the connection window is 65535
    assert server.pending_total == 150000 - 65535
    server.reset_stream(5, 0x8)
    assert server.pending_total == 100000 - 65535
    server.receive_data(
        window_update_frame(0, 200000) + window_update_frame(1, 100000) + window_update_frame(3, 100000)
    )
    assert server.pending_total == 0
    server.send_data(1, b"y" * 10)
    assert server.pending_total == 0


def test_connection_credit_is_not_batched_while_the_window_is_low() -> None:
    """When the application withholds some streams' credit, what it gives back on
    others goes out at once, not when half the window has been acknowledged."""
    server = raw_server(H2Config(connection_window_size=1 << 20, initial_window_size=1 << 20))
    for sid in (1, 3):
        server.receive_data(headers_frame(sid))
    chunk = b"d" * 16000
    for _ in range(40):  # 640 000 bytes on stream 1: more than half the window, withheld
        server.receive_data(data_frame(1, chunk))
    server.data_to_send()
    server.receive_data(data_frame(3, chunk))
    server.acknowledge_received_data(3, 16000)  # only stream 3 is credited
    updates = [f for f in parse_frames(server.data_to_send()) if f[0] == 0x8 and f[2] == 0]
    assert updates, "the connection credit of stream 3 was held back"


def test_connection_and_stream_credit_given_apart() -> None:
    """The server credits the connection as bytes arrive and a stream later (or never):
    the peer's connection window reopens while that stream's stays shut; the stream's
    credit, given later, reopens only the stream."""
    config = H2Config(initial_window_size=100000, connection_window_size=131070)
    pair = Pair(config)
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    for _ in range(5):
        pair.client.send_data(sid, b"x" * 16000)
    pair.pump()
    assert pair.client.outbound_flow_control_window == 131070 - 80000
    pair.server.acknowledge_connection_data(80000)
    sent = pair.server.data_to_send()
    assert window_updates(sent) == {0: 80000}
    pair.client.receive_data(sent)
    assert pair.client.outbound_flow_control_window == 131070  # the connection: open again
    assert pair.client.local_flow_control_window(sid) == 20000  # the stream: still shut
    pair.server.acknowledge_stream_data(sid, 80000)
    sent = pair.server.data_to_send()
    assert window_updates(sent) == {sid: 80000}  # nothing more for the connection
    pair.client.receive_data(sent)
    assert pair.client.local_flow_control_window(sid) == 100000


def test_grown_stream_window_is_sent_at_once_then_refilled_per_half() -> None:
    config = H2Config(initial_window_size=65535, connection_window_size=1 << 24)
    pair = Pair(config)
    sid = pair.request(body=None, end_stream=False)
    other = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.server.grow_receive_window(sid, 262144)
    sent = pair.server.data_to_send()
    assert window_updates(sent) == {sid: 262144 - 65535}
    pair.client.receive_data(sent)
    assert pair.client.local_flow_control_window(sid) == 262144
    assert pair.client.local_flow_control_window(other) == 65535  # only that stream
    pair.server.grow_receive_window(sid, 100000)  # never lowers it
    pair.server.grow_receive_window(sid, 262144)  # nor grants it twice
    assert pair.server.data_to_send() == b""
    for _ in range(10):
        pair.client.send_data(sid, b"x" * 16000)
    events, _ = pair.pump()
    assert sum(e.flow_length for e in of_type(events, DataReceived)) == 160000
    pair.server.acknowledge_received_data(sid, 100000)
    assert sid not in window_updates(pair.server.data_to_send())  # under half of 256 KiB
    pair.server.acknowledge_received_data(sid, 60000)
    sent = pair.server.data_to_send()
    assert window_updates(sent)[sid] == 160000
    pair.client.receive_data(sent)
    assert pair.client.local_flow_control_window(sid) == 262144
    assert pair.server.invariant_violations() == []


def test_growing_a_closed_stream_window_sends_nothing() -> None:
    pair = Pair()
    sid = pair.request(body=b"done", end_stream=True)
    pair.pump()
    pair.server.data_to_send()
    pair.server.grow_receive_window(sid, 1 << 22)  # half-closed (remote): no more DATA
    pair.server.grow_receive_window(99, 1 << 22)  # unknown
    assert pair.server.data_to_send() == b""
