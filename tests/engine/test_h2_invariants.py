"""H2Connection.invariant_violations(): silent on every state the engine reaches with a
real peer, and loud when the state is broken."""

from __future__ import annotations

import h2.settings
from h2_helpers import (
    RESPONSE_BLOCK,
    TRAILERS_BLOCK,
    Pair,
    data_frame,
    headers_frame,
    raw_server,
    rst_frame,
    window_update_frame,
)

from puregrpc._h2.connection import H2Config, H2Connection
from puregrpc._h2.events import DataReceived

S = h2.settings.SettingCodes


def test_fresh_connection_has_no_violations() -> None:
    assert H2Connection().invariant_violations() == []
    server = H2Connection()
    server.initiate_connection()
    assert server.invariant_violations() == []
    assert raw_server().invariant_violations() == []


def test_exercised_connection_has_no_violations_at_any_step() -> None:
    config = H2Config(initial_window_size=32768, connection_window_size=65535, max_concurrent_streams=4)
    pair = Pair(config, client_settings={S.INITIAL_WINDOW_SIZE: 1000})
    server = pair.server

    def check() -> None:
        assert server.invariant_violations() == []

    check()
    # Streams that end normally, with the response held back by the client's window.
    sids = [pair.request(body=b"x" * 3000) for _ in range(3)]
    events, _ = pair.pump()
    check()
    for e in events:
        if isinstance(e, DataReceived):
            server.acknowledge_received_data(e.stream_id, e.flow_length)
            check()
    for sid in sids:
        server.send_headers(sid, RESPONSE_BLOCK)
        server.send_data(sid, b"y" * 5000)
        check()
        server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
        check()
    assert server.pending_total > 0
    for _ in range(10):
        pair.pump()
        check()
    # The client opens its window: the queues drain.
    pair.client.update_settings({S.INITIAL_WINDOW_SIZE: 65535})
    pair.pump()
    check()
    # A stream the client resets, one we reset, one refused over the limit.
    a = pair.request(body=None, end_stream=False)
    b = pair.request(body=None, end_stream=False)
    pair.pump()
    check()
    pair.client.reset_stream(a)
    pair.pump()
    check()
    server.reset_stream(b, 0x8)
    pair.pump()
    check()
    # Streams over the limit, sent raw (the h2 client would not open them).
    busy = [pair.request(body=None, end_stream=False) for _ in range(4 - server.open_stream_count)]
    pair.pump()
    check()
    for sid in range(busy[-1] + 2, busy[-1] + 8, 2):
        server.receive_data(headers_frame(sid, end_stream=True))
        check()
    assert server.open_stream_count == 4
    server.data_to_send()
    for sid in busy:
        server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)
        check()
        server.receive_data(data_frame(sid, b"", end_stream=True))
        check()
    assert server.open_stream_count == 0
    # Late frames on closed streams, then a connection error.
    server.receive_data(window_update_frame(sids[0], 10))
    check()
    server.receive_data(rst_frame(a))
    check()
    server.receive_data(data_frame(1001, b"z"))  # idle stream: connection error
    assert server.terminated
    check()


def test_broken_state_is_reported() -> None:
    server = raw_server()
    server.receive_data(headers_frame(1))
    assert server.invariant_violations() == []
    server.pending_total = 5
    assert any("pending_total" in v for v in server.invariant_violations())
    server.pending_total = 0
    st = server._streams[1]
    st.local_closed = st.remote_closed = st.end_queued = True
    assert any("closed in both directions" in v for v in server.invariant_violations())
    st.local_closed = False
    st.send_window = 1 << 31
    assert any("send window" in v for v in server.invariant_violations())
    st.send_window = 0
    server._conn_recv_window = -1
    assert any("connection receive window" in v for v in server.invariant_violations())
    server._conn_recv_window = 0
    assert server.invariant_violations() == []
    limited = raw_server(H2Config(max_concurrent_streams=1))
    limited.receive_data(headers_frame(1))
    limited.config.max_concurrent_streams = 0
    assert any("MAX_CONCURRENT_STREAMS" in v for v in limited.invariant_violations())
