"""WINDOW_UPDATE floods are cut; legitimate transfers with small windows never are."""

from __future__ import annotations

import h2.events
import h2.settings
from h2_helpers import RESPONSE_BLOCK, TRAILERS_BLOCK, Pair, goaway_of, headers_frame, raw_server, window_update_frame

from puregrpc._h2.connection import WINDOW_UPDATE_CREDIT_MAX, H2Config
from puregrpc._h2.errors import ErrorCode
from puregrpc._h2.events import ConnectionTerminated

S = h2.settings.SettingCodes


def flood_until_cut(pair: Pair, sid: int, limit: int, increment: int = 1) -> int:
    """WINDOW_UPDATE(+increment) frames from the h2 client, 100 per read, a whole
    flood within 10 ms of the peer's clock; returns how many went in before the cut."""
    sent = 0
    while sent < limit:
        for _ in range(100):
            pair.client.increment_flow_control_window(increment, stream_id=sid or None)
        sent += 100
        pair.now += 0.00001
        events = pair.to_server(pair.client.data_to_send())
        if any(isinstance(e, ConnectionTerminated) for e in events):
            return sent
    raise AssertionError(f"{sent} WINDOW_UPDATE frames taken without the connection being cut")


def test_connection_window_update_flood_is_cut() -> None:
    pair = Pair()
    sent = flood_until_cut(pair, 0, limit=20_000)
    assert sent <= H2Config().useless_frame_burst + 200
    goaway = goaway_of(pair.server.data_to_send())
    assert goaway is not None and goaway[1] == ErrorCode.ENHANCE_YOUR_CALM
    assert pair.server.invariant_violations() == []


def test_stream_window_update_flood_is_cut() -> None:
    pair = Pair()
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    sent = flood_until_cut(pair, sid, limit=20_000)
    assert sent <= H2Config().useless_frame_burst + 200
    goaway = goaway_of(pair.server.data_to_send())
    assert goaway is not None and goaway[1] == ErrorCode.ENHANCE_YOUR_CALM


def test_window_updates_on_closed_streams_are_charged() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1, end_stream=True))
    server.send_headers(1, TRAILERS_BLOCK, end_stream=True)  # closed both ways
    server.data_to_send()
    flood = window_update_frame(1, 1) * 100
    for _ in range(200):
        server.receive_data(flood)
        if server.terminated:
            break
    assert server.terminated
    goaway = goaway_of(server.data_to_send())
    assert goaway is not None and goaway[1] == ErrorCode.ENHANCE_YOUR_CALM


def test_credit_banked_by_a_download_is_capped() -> None:
    """After a long download the peer's free allowance is bounded: a flood that
    follows is still cut within the cap plus the burst."""
    pair = Pair()
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    for _ in range(WINDOW_UPDATE_CREDIT_MAX):  # small frames, never acknowledged
        pair.server.send_data(sid, b"m")
    pair.server.data_to_send()
    sent = flood_until_cut(pair, 0, limit=40_000)
    assert WINDOW_UPDATE_CREDIT_MAX <= sent <= WINDOW_UPDATE_CREDIT_MAX + H2Config().useless_frame_burst + 200


def stream_download(pair: Pair, sids: list[int], total: int, message: int) -> None:
    """Send ``total`` bytes on each stream in ``message``-byte DATA chunks, as the
    windows allow, while the h2 client acknowledges every byte it gets at once (the
    most WINDOW_UPDATEs its window manager sends). The peer's clock never moves,
    so only the budgets' bursts are available."""
    left = dict.fromkeys(sids, total)
    for sid in sids:
        pair.server.send_headers(sid, RESPONSE_BLOCK)
    rounds = 0
    while any(left.values()) or pair.server.pending_total:
        rounds += 1
        assert rounds < 1_000_000
        for sid in sids:
            while left[sid] and pair.server.pending_bytes(sid) < 4 * message:
                n = min(message, left[sid])
                pair.server.send_data(sid, b"d" * n)
                left[sid] -= n
                if not left[sid]:
                    pair.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
        for event in pair.to_client():
            if isinstance(event, h2.events.DataReceived):
                pair.client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        out = pair.client.data_to_send()
        if out:
            events = pair.to_server(out)
            assert not any(isinstance(e, ConnectionTerminated) for e in events), events
        assert pair.server.invariant_violations() == []
    pair.pump()
    assert not pair.server.terminated
    assert pair.server.open_stream_count == len(sids) and pair.server.pending_total == 0


def test_bulk_download_with_small_windows_is_never_cut() -> None:
    # 16 KiB stream windows: one WINDOW_UPDATE per 8 KiB on the stream, 32 KiB on the connection.
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 16384})
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    stream_download(pair, [sid], total=48 << 20, message=16384)
    assert pair.server._wu_warrants >= 3000


def test_many_streams_of_small_messages_are_never_cut() -> None:
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 1024})
    sids = [pair.request(body=None, end_stream=False) for _ in range(8)]
    pair.pump()
    stream_download(pair, sids, total=256 << 10, message=100)


def test_tiny_window_dribble_is_cut() -> None:
    """+1 increments on a stream with queued DATA each make us send one byte: they
    earn no credit, so the dribble ends like any other WINDOW_UPDATE flood."""
    pair = Pair(client_settings={S.INITIAL_WINDOW_SIZE: 0})
    sid = pair.request(body=None, end_stream=False)
    pair.pump()
    pair.server.send_headers(sid, RESPONSE_BLOCK)
    pair.server.send_data(sid, b"q" * 100_000)
    pair.server.data_to_send()
    sent = 0
    flood = window_update_frame(sid, 1) * 100
    while not pair.server.terminated:
        pair.server.receive_data(flood, 0.0)
        pair.server.data_to_send()
        sent += 100
        assert sent < 20_000
    assert pair.server.pending_bytes(sid) == 0  # the connection is gone
