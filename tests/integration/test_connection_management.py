"""Connection management with grpcio's option names (gRFC A8, A9): keepalive, client
PING policing, idle and age limits, the handshake timeout; options checked or warned
about; the access log. Real sockets: the ``h2`` library where the wire is the point,
grpcio's client where the outcome is what a user sees."""

from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional

import grpc
import pytest

import puregrpc
from puregrpc import _connection

from ._support import (
    CLIENT_PREFACE,
    H2,
    TIMEOUT,
    Recorder,
    capture_log,
    frame_bytes,
    grpc_frame,
    grpc_request,
    raw_request,
    read_frames,
    serve,
    split_frames,
)

SERVICE = "conn.Probe"


def _handlers(extra: Optional[Dict[str, Any]] = None) -> List[Any]:
    def sleep(request: bytes, context: Any) -> bytes:
        end = time.monotonic() + float(request.decode() or "0")
        while time.monotonic() < end and context.is_active():
            time.sleep(0.01)
        return b"slept" if context.is_active() else b""

    methods = {
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
        "Sleep": grpc.unary_unary_rpc_method_handler(sleep),
    }
    methods.update(extra or {})
    return [grpc.method_handlers_generic_handler(SERVICE, methods)]


class ConnectionTerminated:
    """A GOAWAY read from raw bytes, shaped like the h2 library's event."""

    def __init__(self, error_code: int, additional_data: bytes) -> None:
        self.error_code = error_code
        self.additional_data = additional_data


def _goaways(data: bytes) -> List[Any]:
    frames, _ = split_frames(data)
    return [ConnectionTerminated(int.from_bytes(p[4:8], "big"), p[8:]) for kind, _, _, p in frames if kind == 0x7]


class Peer:
    """The h2 library on a socket; reads only when told (so PINGs go unanswered)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("localhost", port), timeout=TIMEOUT)
        self.conn = H2.connection.H2Connection(H2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())
        self.events: List[Any] = []
        self.closed = False

    def send(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def call(self, path: str, message: bytes) -> int:
        """Send a unary request; its stream id."""
        sid: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, grpc_request(path))
        self.conn.send_data(sid, grpc_frame(message), end_stream=True)
        self.send()
        return sid

    def read(self, timeout: float) -> None:
        """Read for up to ``timeout`` seconds (the h2 library ACKs PINGs it reads)."""
        end = time.monotonic() + timeout
        while not self.closed and time.monotonic() < end:
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                self.events += self.conn.receive_data(data)
            except Exception:
                # The h2 library refuses any frame after a GOAWAY, even the PING of a
                # graceful two-step GOAWAY (RFC 9113 6.8 allows it), and loses the
                # batch's events: read the GOAWAY from the bytes then.
                goaways = _goaways(data)
                if not goaways:
                    raise
                self.events += goaways
                continue
            self.send()

    def of(self, kind: str) -> List[Any]:
        return [e for e in self.events if type(e).__name__ == kind]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def peers() -> Iterator[List[Peer]]:
    made: List[Peer] = []
    yield made
    for peer in made:
        peer.close()


# --- keepalive ----------------------------------------------------------------------------------


def test_keepalive_disconnects_a_silent_peer_and_cancels_its_calls(peers: List[Peer]) -> None:
    active = Recorder()

    def hold(request: bytes, context: Any) -> bytes:
        active.add("entered")
        while context.is_active():
            time.sleep(0.01)
        active.add("inactive")
        return b""

    options = [("grpc.keepalive_time_ms", 300), ("grpc.keepalive_timeout_ms", 300)]
    with serve(handlers=_handlers({"Hold": grpc.unary_unary_rpc_method_handler(hold)}), options=options) as running:
        peer = Peer(running.port)
        peers.append(peer)
        peer.call(f"/{SERVICE}/Hold", b"")
        assert active.wait_for("entered")
        started = time.monotonic()
        # The peer reads nothing from now on: the keepalive PING goes unanswered.
        assert active.wait_for("inactive", timeout=5)
        elapsed = time.monotonic() - started
        assert elapsed < 0.3 + 0.3 + 1.0, f"disconnected after {elapsed:.2f}s"
        peer.read(1.0)
        assert peer.closed
        assert peer.of("PingReceived"), "the server never sent a keepalive PING"


def test_keepalive_pings_an_answering_peer_and_keeps_it(peers: List[Peer]) -> None:
    options = [("grpc.keepalive_time_ms", 200), ("grpc.keepalive_timeout_ms", 500)]
    with serve(handlers=_handlers(), options=options) as running:
        peer = Peer(running.port)
        peers.append(peer)
        sid = peer.call(f"/{SERVICE}/Sleep", b"1.5")
        peer.read(2.0)  # reading: the h2 library acknowledges every PING
        assert not peer.closed
        assert len(peer.of("PingReceived")) >= 3
        assert [e.stream_id for e in peer.of("StreamEnded")] == [sid]


@pytest.mark.parametrize("permit", [0, 1])
def test_keepalive_without_calls_only_when_permitted(permit: int, peers: List[Peer]) -> None:
    options = [("grpc.keepalive_time_ms", 100), ("grpc.keepalive_permit_without_calls", permit)]
    with serve(handlers=_handlers(), options=options) as running:
        peer = Peer(running.port)
        peers.append(peer)
        peer.read(0.8)
        assert bool(peer.of("PingReceived")) == bool(permit)
        assert not peer.closed


# --- client PING policing -----------------------------------------------------------------------


def test_too_many_pings_get_goaway_enhance_your_calm(peers: List[Peer]) -> None:
    with serve(handlers=_handlers()) as running:  # grpcio's defaults: 5 min, 2 strikes
        peer = Peer(running.port)
        peers.append(peer)
        peer.conn.ping(b"first\x00\x00\x00")
        peer.send()
        peer.read(0.3)
        assert [e.ping_data for e in peer.of("PingAckReceived")] == [b"first\x00\x00\x00"]  # permitted: acked
        for n in range(3):  # three more with no call and no data: strikes 1, 2, then over
            peer.conn.ping(bytes([n]) * 8)
            peer.send()
            peer.read(0.2)
        goaways = peer.of("ConnectionTerminated")
        assert goaways and goaways[0].error_code == 0xB  # ENHANCE_YOUR_CALM
        assert goaways[0].additional_data == b"too_many_pings"


def test_pings_at_the_permitted_rate_are_acknowledged(peers: List[Peer]) -> None:
    options = [("grpc.http2.min_ping_interval_without_data_ms", 100), ("grpc.keepalive_permit_without_calls", 1)]
    with serve(handlers=_handlers(), options=options) as running:
        peer = Peer(running.port)
        peers.append(peer)
        for n in range(6):
            peer.conn.ping(bytes([n]) * 8)
            peer.send()
            peer.read(0.15)
        assert len(peer.of("PingAckReceived")) == 6
        assert not peer.of("ConnectionTerminated")


# --- idle and age -------------------------------------------------------------------------------


def test_idle_connection_gets_goaway_but_never_with_a_call_in_flight(
    peers: List[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The h2 library never acks the drain's PING (it refuses frames after a GOAWAY), so
    # the final GOAWAY and the close come after the drain's wait, shortened from 20 s.
    monkeypatch.setattr(_connection, "_DRAIN_PING_TIMEOUT", 0.5)
    with serve(handlers=_handlers(), options=[("grpc.max_connection_idle_ms", 300)]) as running:
        peer = Peer(running.port)
        peers.append(peer)
        sid = peer.call(f"/{SERVICE}/Sleep", b"1.0")
        peer.read(0.9)  # three idle periods with the call in flight
        assert not peer.of("ConnectionTerminated") and not peer.closed
        peer.read(1.0)  # the call ends at 1 s, then 300 ms idle
        assert [e.stream_id for e in peer.of("StreamEnded")] == [sid]
        goaways = peer.of("ConnectionTerminated")
        assert goaways and goaways[0].error_code == 0  # graceful
        peer.read(1.0)
        assert peer.closed


def test_max_connection_age_rotates_connections_without_failed_rpcs() -> None:
    """A client calling in a loop sees its connection replaced every ~300 ms (how clients
    rebalance across replicas behind a load balancer) and not one failed RPC."""
    options = [("grpc.max_connection_age_ms", 300), ("grpc.max_connection_age_grace_ms", 5000)]
    with serve(handlers=_handlers(), options=options) as running, running.channel() as ch:
        echo = ch.unary_unary(f"/{SERVICE}/Echo")
        sleep = ch.unary_unary(f"/{SERVICE}/Sleep")
        long_call = sleep.future(b"0.8", timeout=TIMEOUT)  # spans an age GOAWAY: finishes
        failures = 0
        calls = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            try:
                echo(b"x", timeout=TIMEOUT)
            except grpc.RpcError:
                failures += 1
            calls += 1
        assert long_call.result() == b"slept"
        assert failures == 0, f"{failures} of {calls} RPCs failed"
        assert running.server.stats().connections_total >= 4


def test_max_connection_age_grace_ends_long_calls() -> None:
    options = [("grpc.max_connection_age_ms", 200), ("grpc.max_connection_age_grace_ms", 300)]
    with serve(handlers=_handlers(), options=options) as running, running.channel() as ch:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(f"/{SERVICE}/Sleep")(b"5", timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 2.0


# --- handshake ----------------------------------------------------------------------------------


def test_handshake_timeout_closes_a_silent_connection() -> None:
    with serve(handlers=_handlers(), options=[("grpc.server_handshake_timeout_ms", 300)]) as running:
        with socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as sock:
            started = time.monotonic()
            sock.sendall(b"PRI * HTTP/2.0\r\n")  # half a preface, then nothing
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert time.monotonic() - started < 0.3 + 1.0
        # The server still serves well-behaved clients.
        with running.channel() as ch:
            assert ch.unary_unary(f"/{SERVICE}/Echo")(b"ok", timeout=TIMEOUT) == b"ok"


def test_connections_in_handshake_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_connection, "MAX_HANDSHAKING", 5)
    with serve(handlers=_handlers(), options=[("grpc.server_handshake_timeout_ms", 1000)]) as running:
        silent = [socket.create_connection(("localhost", running.port), timeout=TIMEOUT) for _ in range(5)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as extra:
                started = time.monotonic()
                try:
                    assert extra.recv(65536) == b""  # closed at once, before any SETTINGS
                except ConnectionResetError:
                    pass
                assert time.monotonic() - started < 0.5
        finally:
            for sock in silent:
                sock.close()
        time.sleep(0.2)
        with running.channel() as ch:
            assert ch.unary_unary(f"/{SERVICE}/Echo")(b"ok", timeout=TIMEOUT) == b"ok"


# --- options --------------------------------------------------------------------------------------


def test_unsupported_options_warn_once_naming_them() -> None:
    executor = ThreadPoolExecutor(1)
    with capture_log() as log:
        server = puregrpc.server(
            executor,
            options=[
                ("grpc.keepalive_time_ms", 60000),
                ("grpc.keepalive_tme_ms", 1),  # misspelt
                ("grpc.primary_user_agent", "x"),
                ("grpc.primary_user_agent", "y"),
            ],
        )
    warnings = [r.getMessage() for r in log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "'grpc.keepalive_tme_ms'" in warnings[0] and "did you mean 'grpc.keepalive_time_ms'" in warnings[0]
    assert "'grpc.primary_user_agent'" in warnings[1]
    server.stop(None)
    executor.shutdown()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("grpc.keepalive_time_ms", "7200000"),
        ("grpc.keepalive_time_ms", 0),
        ("grpc.max_connection_age_ms", -5),
        ("grpc.max_receive_message_length", -2),
        ("grpc.so_reuseport", True),
        ("grpc.http2.max_ping_strikes", 1.5),
        ("grpc.http2.lookahead_bytes", 1000),
        ("grpc.http2.lookahead_bytes", 2**31),
    ],
)
def test_bad_option_values_raise_naming_the_option(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=option.replace(".", r"\.")):
        puregrpc.server(ThreadPoolExecutor(1), options=[(option, value)])


# --- the stream receive window --------------------------------------------------------------------


@pytest.mark.parametrize("lookahead", [None, 65535, 8 * 1024 * 1024])
def test_lookahead_bytes_sets_each_streams_receive_window(lookahead: Optional[int], peers: List[Peer]) -> None:
    options = [] if lookahead is None else [("grpc.http2.lookahead_bytes", lookahead)]
    with serve(handlers=_handlers(), options=options) as running:
        peer = Peer(running.port)
        peers.append(peer)
        peer.read(0.3)
        (changed,) = peer.of("RemoteSettingsChanged")
        window = changed.changed_settings[H2.settings.SettingCodes.INITIAL_WINDOW_SIZE].new_value
        assert window == (65535 if lookahead is None else lookahead)
        # A request larger than the window still arrives whole: the server reopens it.
        message = bytes(range(256)) * 1200  # 307,200 bytes
        body = grpc_frame(message)
        sid = peer.conn.get_next_available_stream_id()
        peer.conn.send_headers(sid, grpc_request(f"/{SERVICE}/Echo"))
        deadline = time.monotonic() + TIMEOUT
        while body and time.monotonic() < deadline:
            size = min(len(body), peer.conn.local_flow_control_window(sid), 16384)
            if size:
                peer.conn.send_data(sid, body[:size], end_stream=size == len(body))
                body = body[size:]
                peer.send()
            else:
                peer.read(0.05)  # for the server's WINDOW_UPDATE
        assert not body, "the server never reopened the window"
        received = b""
        taken = 0
        while not peer.of("StreamEnded") and time.monotonic() < deadline:
            peer.read(0.05)
            for event in peer.of("DataReceived")[taken:]:
                assert event.stream_id == sid
                received += event.data
                peer.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                taken += 1
            peer.send()
        assert received == grpc_frame(message)


def test_a_message_larger_than_the_window_grows_it_to_fit(peers: List[Peer]) -> None:
    """With the default 64 KiB window, a stream whose first DATA announces a 1 MiB
    message gets one WINDOW_UPDATE that fits the whole message (not one per 32 KiB, each
    a round trip its sender may wait for); at most MAX_GROWN_STREAMS streams of a
    connection grow (a grown window is credit given in advance), the others stay at 64
    KiB and still complete."""
    from puregrpc._connection import MAX_GROWN_STREAMS

    with serve(handlers=_handlers()) as running:
        peer = Peer(running.port)
        peers.append(peer)
        # Room for the six 1 MiB answers at once: only the server's receive window is
        # under test, and the replies need not trickle in 64 KiB at a time.
        peer.conn.update_settings({H2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 8 << 20})
        peer.conn.increment_flow_control_window(16 << 20)
        peer.send()
        peer.read(0.3)
        message = b"g" * (1 << 20)
        body = grpc_frame(message)
        sids = []
        for _ in range(MAX_GROWN_STREAMS + 2):
            sid = peer.conn.get_next_available_stream_id()
            peer.conn.send_headers(sid, grpc_request(f"/{SERVICE}/Echo"))
            peer.conn.send_data(sid, body[:16384])
            sids.append(sid)
        peer.send()
        peer.read(0.5)
        windows = [peer.conn.local_flow_control_window(sid) for sid in sids]
        grown = [w for w in windows if w == len(body) - 16384]
        assert len(grown) == MAX_GROWN_STREAMS, windows
        assert windows.count(65535 - 16384) == 2, windows
        # Every request still arrives whole and is answered.
        sent = dict.fromkeys(sids, 16384)
        ended: set = set()
        deadline = time.monotonic() + TIMEOUT
        while any(n < len(body) for n in sent.values()) and time.monotonic() < deadline:
            for sid in sids:
                # As much as the window allows, in frames of at most 16 KiB.
                while (size := min(len(body) - sent[sid], peer.conn.local_flow_control_window(sid), 16384)) > 0:
                    peer.conn.send_data(
                        sid, body[sent[sid] : sent[sid] + size], end_stream=sent[sid] + size == len(body)
                    )
                    sent[sid] += size
            peer.send()
            peer.read(0.02)
            for event in peer.of("DataReceived"):
                peer.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            ended |= {e.stream_id for e in peer.of("StreamEnded")}
            peer.events.clear()
        assert all(n == len(body) for n in sent.values()), sent
        assert_ended = time.monotonic() + TIMEOUT
        while len(ended) < len(sids) and time.monotonic() < assert_ended:
            peer.read(0.05)
            for event in peer.of("DataReceived"):
                peer.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            ended |= {e.stream_id for e in peer.of("StreamEnded")}
            peer.events.clear()
            peer.send()
        assert ended == set(sids)


# --- access log -----------------------------------------------------------------------------------


def test_access_log_one_line_per_rpc_only_when_enabled() -> None:
    access = logging.getLogger("puregrpc.access")
    with serve(handlers=_handlers()) as running, running.channel() as ch, capture_log() as log:
        ch.unary_unary(f"/{SERVICE}/Echo")(b"quiet", timeout=TIMEOUT)
        time.sleep(0.1)
        assert not [r for r in log.records if r.name == "puregrpc.access"]
        access.setLevel(logging.INFO)
        try:
            ch.unary_unary(f"/{SERVICE}/Echo")(b"loud", timeout=TIMEOUT)
            with pytest.raises(grpc.RpcError):
                ch.unary_unary(f"/{SERVICE}/Nope")(b"", timeout=TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while len([r for r in log.records if r.name == "puregrpc.access"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            access.setLevel(logging.WARNING)
    lines = [r.getMessage() for r in log.records if r.name == "puregrpc.access"]
    assert len(lines) == 2
    assert f"/{SERVICE}/Echo OK" in lines[0] and "in=1 out=1" in lines[0] and lines[0].startswith("ipv")
    assert f"/{SERVICE}/Nope UNIMPLEMENTED" in lines[1]


@pytest.mark.parametrize("delay", [0.5, 1.5])
def test_streams_sent_before_the_client_saw_the_age_goaway_are_served(delay: float) -> None:
    """gRFC A9 / RFC 9113 6.8: after the first GOAWAY (last stream 2^31-1) the server still
    serves streams the client opened before it read that GOAWAY; only the final GOAWAY, a
    round trip later, names the last stream. (Envoy, without retries, found this.) Also
    when that round trip is slow: 1.5 s here (a loaded client, a throttled container);
    the final GOAWAY used to go after 1 s without the ack, and this stream was refused.
    Raw frames: the h2 library accepts nothing after a GOAWAY."""
    import hpack

    options = [("grpc.max_connection_age_ms", 200), ("grpc.max_connection_age_grace_ms", 5000)]
    with (
        serve(handlers=_handlers(), options=options) as running,
        socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(CLIENT_PREFACE)
        time.sleep(delay)  # the age GOAWAY and its PING are sent, but not read (nor acked)
        sock.sendall(raw_request(1, f"/{SERVICE}/Echo", b"late"))
        frames = read_frames(sock, lambda frames: False, timeout=2.0)
        assert running.server.stats().streams_refused == 0
    goaways = [int.from_bytes(p[:4], "big") for t, _, _, p in frames if t == 0x7]
    assert goaways and goaways[0] == 2**31 - 1  # the first GOAWAY came before the request
    assert not [f for f in frames if f[0] == 0x3 and f[2] == 1], "stream 1 was reset (refused)"
    decoder = hpack.Decoder()
    statuses = [dict(decoder.decode(p)).get("grpc-status") for t, flags, sid, p in frames if t == 0x1 and sid == 1]
    assert "0" in statuses, statuses


@pytest.mark.parametrize(
    ("gap", "busy"),
    [(None, False), (0.02, False), (0.3, False), (0.6, True)],
    ids=["one write", "two writes", "0.3 s later", "0.6 s later, a call running"],
)
def test_a_stream_that_follows_the_drains_ping_ack_is_served_and_named(gap: Optional[float], busy: bool) -> None:
    """grpc-core's client writes control frames ahead of stream frames, so a stream it
    started before it read the age drain's first GOAWAY can reach the server after its
    PING ack: in the same write, in the next, or behind other streams' DATA. It must be
    served, and the final GOAWAY must name it; that GOAWAY waits until no call has run,
    and no stream has come, for _DRAIN_QUIET (1 s). It used to go out on the ack: the
    stream was then served although the GOAWAY named the streams before it (the client
    could retry it elsewhere: it ran twice), or later refused (REFUSED_STREAM: left to
    the client's retry, which grpcio's does not always make; the soak showed both)."""
    import hpack

    options = [("grpc.max_connection_age_ms", 200), ("grpc.max_connection_age_grace_ms", 5000)]
    with (
        serve(handlers=_handlers(), options=options) as running,
        socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as sock,
    ):
        if busy:  # stream 1 runs 1.2 s, past the late stream
            sock.sendall(CLIENT_PREFACE + raw_request(1, f"/{SERVICE}/Sleep", b"1.2"))
        else:
            sock.sendall(CLIENT_PREFACE + raw_request(1, f"/{SERVICE}/Echo", b"early"))

        def drain_ping(frames: List[Any]) -> bool:
            return any(t == 0x6 and not flags & 0x1 for t, flags, _, _ in frames)

        before = read_frames(sock, drain_ping, timeout=5.0)
        pings = [p for t, flags, _, p in before if t == 0x6 and not flags & 0x1]
        assert pings, "no drain PING within 5 s"
        ack = frame_bytes(0x6, 0x1, 0, pings[0])
        late = raw_request(3, f"/{SERVICE}/Echo", b"late")
        if gap is None:
            sock.sendall(ack + late)
        else:
            sock.sendall(ack)
            time.sleep(gap)
            sock.sendall(late)
        after = read_frames(sock, lambda frames: len(_goaway_ids(frames)) >= 1, timeout=5.0)
        after += read_frames(sock, lambda frames: False, timeout=0.3)
        refused = running.server.stats().streams_refused
    decoder = hpack.Decoder()
    statuses = {
        sid: dict(decoder.decode(p)).get("grpc-status") for t, _, sid, p in before + after if t == 0x1 and sid in (1, 3)
    }
    assert statuses == {1: "0", 3: "0"}, statuses  # both served
    assert _goaway_ids(after) == [3], _goaway_ids(after)  # the final GOAWAY names the late one
    assert not [sid for t, _, sid, _ in after if t == 0x3], "a stream was reset"
    assert refused == 0


def _goaway_ids(frames: List[Any]) -> List[int]:
    return [int.from_bytes(p[:4], "big") for t, _, _, p in frames if t == 0x7]


def test_an_age_drain_whose_ping_is_never_acked_still_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that never acknowledges the drain's PING: the final GOAWAY goes after the
    drain's wait (shortened here from 20 s), naming the last stream served, and the
    connection closes."""
    monkeypatch.setattr(_connection, "_DRAIN_PING_TIMEOUT", 0.8)
    options = [("grpc.max_connection_age_ms", 200), ("grpc.max_connection_age_grace_ms", 10000)]
    with (
        serve(handlers=_handlers(), options=options) as running,
        socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(CLIENT_PREFACE + raw_request(1, f"/{SERVICE}/Echo", b"early"))
        start = time.monotonic()
        frames = read_frames(sock, lambda frames: len(_goaway_ids(frames)) >= 2, timeout=5.0)
        took = time.monotonic() - start
        assert _goaway_ids(frames) == [2**31 - 1, 1], _goaway_ids(frames)
        assert 0.8 <= took < 3.0, took  # the age (0.2 s) plus the wait (0.8 s)
        sock.settimeout(3.0)
        rest = b""
        while True:  # the server closes once the final GOAWAY is out (no call runs)
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    assert not _goaway_ids(split_frames(rest)[0]), "a third GOAWAY"


def test_stop_during_an_age_drain_does_not_wait_the_drains_ping_timeout() -> None:
    """The server's stop() while a connection's age drain waits for a PING ack that never
    comes: the final GOAWAY follows within stop's 1 s wait (lifecycle.md 13), not the age
    drain's 20 s, and the running call still finishes within the grace."""
    import hpack

    options = [("grpc.max_connection_age_ms", 200)]
    with (
        serve(handlers=_handlers(), options=options) as running,
        socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(CLIENT_PREFACE + raw_request(1, f"/{SERVICE}/Sleep", b"2.5"))
        first = read_frames(sock, lambda frames: len(_goaway_ids(frames)) >= 1, timeout=5.0)
        assert _goaway_ids(first) == [2**31 - 1]
        time.sleep(0.2)
        stopped = time.monotonic()
        done = running.server.stop(10)
        frames = read_frames(sock, lambda frames: len(_goaway_ids(frames)) >= 1, timeout=5.0)
        took = time.monotonic() - stopped
        assert _goaway_ids(frames) == [1], _goaway_ids(frames)
        assert took < 1.8, f"the final GOAWAY came {took:.2f} s after stop()"
        frames += read_frames(sock, lambda frames: any(t == 0x1 and f & 0x1 for t, f, _, _ in frames), timeout=5.0)
        assert done.wait(5.0)
    decoder = hpack.Decoder()
    statuses = [dict(decoder.decode(p)).get("grpc-status") for t, _, sid, p in frames if t == 0x1 and sid == 1]
    assert "0" in statuses, statuses  # the call finished within the grace


def test_a_stream_opened_after_stop_is_refused_and_counted() -> None:
    """lifecycle.md 12: once stop() is called, a new stream on a connection that is busy
    gets REFUSED_STREAM (never a handler) while the running call finishes; Server.stats()
    counts the refusal."""
    path = f"/{SERVICE}/Sleep"
    with (
        serve(handlers=_handlers()) as running,
        socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(CLIENT_PREFACE + raw_request(1, path, b"1.0"))
        time.sleep(0.3)  # the call runs
        done = running.server.stop(10)
        sock.sendall(raw_request(3, path, b"0"))

        def ended(frames: List[Any]) -> bool:
            return any(t == 0x1 and flags & 0x1 and sid == 1 for t, flags, sid, _ in frames)

        frames = read_frames(sock, ended, timeout=5.0)
        assert done.wait(TIMEOUT)
        stats = running.server.stats()
    resets = [(sid, int.from_bytes(p[:4], "big")) for t, _, sid, p in frames if t == 0x3]
    assert resets == [(3, 0x7)], resets  # REFUSED_STREAM
    assert ended(frames)
    assert stats.streams_refused == 1
    assert stats.rpcs_started == 1
