"""Regressions of service-losing defects found with real clients: stalls, memory that a
client could grow, and wire behaviour where grpcio's server is the floor.

grpcio's client is the peer where the outcome is a status; the ``h2`` library over a
real socket where the wire (frames, windows, settings) is the point.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Optional, Tuple

import grpc
import pytest

import puregrpc
from puregrpc._call import STREAM_WINDOW_GROWN
from puregrpc._connection import CREDIT_LIMIT, MAX_GROWN_STREAMS
from puregrpc._options import OPTIONS

from ._support import (
    CLIENT_PREFACE,
    H2,
    TIMEOUT,
    Frame,
    Recorder,
    frame_bytes,
    grpc_frame,
    grpc_messages,
    grpc_request,
    raw_request,
    read_frames,
    serve,
    wait_for,
)

SERVICE = "correctness.Probe"
KiB = 1024
MiB = 1024 * KiB
LOOKAHEAD = OPTIONS["grpc.http2.lookahead_bytes"].default  # each stream's initial window


def _handlers(extra: Dict[str, Any]) -> List[Any]:
    methods = {
        "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
        # The request is the response size, as ASCII digits.
        "Sized": grpc.unary_unary_rpc_method_handler(lambda request, context: b"z" * int(request.decode())),
        "Metadata": grpc.unary_unary_rpc_method_handler(
            lambda request, context: repr(sorted(tuple(m) for m in context.invocation_metadata())).encode()
        ),
    }
    methods.update(extra)
    return [grpc.method_handlers_generic_handler(SERVICE, methods)]


def rss() -> int:
    """This process's resident set size, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


# --- a raw HTTP/2 client that can hold many streams and choose what it reads ------------


class H2Peer:
    """The ``h2`` library on a blocking socket, driven step by step by the test."""

    def __init__(self, port: int, initial_window: Optional[int] = None) -> None:
        self.sock = socket.create_connection(("localhost", port), timeout=TIMEOUT)
        config = H2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = H2.connection.H2Connection(config=config)
        if initial_window is not None:
            self.conn.local_settings.initial_window_size = initial_window
        self.conn.initiate_connection()
        self.flush()
        self.data: Dict[int, bytes] = {}
        self.trailers: Dict[int, Dict[str, str]] = {}
        self.headers: Dict[int, Dict[str, str]] = {}
        self.resets: Dict[int, int] = {}
        self.ended: set[int] = set()
        self.goaway: Optional[Any] = None
        self.unacked: Dict[int, int] = {}  # flow-controlled bytes received, not acknowledged

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def start(self, path: str, *extra: Tuple[str, str], body: bytes = b"", end: bool = True) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, grpc_request(path, *extra), end_stream=end and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def pump(self, ack: bool = True, timeout: float = 0.2) -> int:
        """Read what arrives within ``timeout``; return the bytes read. With ``ack``,
        received DATA is acknowledged (WINDOW_UPDATE), else the windows stay shut."""
        if ack and self.unacked:
            for sid, length in self.unacked.items():
                self.conn.acknowledge_received_data(length, sid)
            self.unacked.clear()
            self.flush()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return 0
        finally:
            self.sock.settimeout(TIMEOUT)
        if not data:
            raise ConnectionError("server closed the connection")
        for event in self.conn.receive_data(data):
            kind = type(event).__name__
            sid = getattr(event, "stream_id", None)
            if kind == "ResponseReceived":
                self.headers[sid] = dict(event.headers)
            elif kind == "DataReceived":
                self.data[sid] = self.data.get(sid, b"") + event.data
                if ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                else:
                    self.unacked[sid] = self.unacked.get(sid, 0) + event.flow_controlled_length
            elif kind == "TrailersReceived":
                self.trailers[sid] = dict(event.headers)
            elif kind == "StreamEnded":
                self.ended.add(sid)
            elif kind == "StreamReset":
                self.resets[sid] = event.error_code
            elif kind == "ConnectionTerminated":
                self.goaway = event
        self.flush()
        return len(data)

    def pump_until(self, predicate: Any, ack: bool = True, timeout: float = TIMEOUT) -> bool:
        end = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > end:
                return False
            self.pump(ack)
        return True

    def status(self, sid: int) -> Optional[str]:
        fields = self.trailers.get(sid) or self.headers.get(sid) or {}
        return fields.get("grpc-status")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def peers() -> Iterator[List[H2Peer]]:
    made: List[H2Peer] = []
    yield made
    for peer in made:
        peer.close()


# --- 1. uvloop: see test_event_loop.py (the suite runs once with it, once without) ------

# --- 2. every received byte is credited back, whatever ends the call -------------------


def _early_end_handlers(read: threading.Event) -> List[Any]:
    def returns_early(requests: Iterator[bytes], context: Any) -> bytes:
        next(requests)
        time.sleep(0.1)  # the client keeps sending: more than the queue bound piles up
        return b"done"

    def aborts(requests: Iterator[bytes], context: Any) -> bytes:
        next(requests)
        time.sleep(0.1)
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "enough")
        return b""

    def waits(requests: Iterator[bytes], context: Any) -> bytes:
        next(requests)
        read.set()
        while context.is_active():
            time.sleep(0.01)
        return b""

    return _handlers(
        {
            "ReturnsEarly": grpc.stream_unary_rpc_method_handler(returns_early),
            "Aborts": grpc.stream_unary_rpc_method_handler(aborts),
            "Waits": grpc.stream_unary_rpc_method_handler(waits),
        }
    )


def _upload() -> Iterator[bytes]:
    for _ in range(64):  # 4 MiB, far more than the handler reads
        yield b"u" * (64 * KiB)


@pytest.mark.parametrize("ending", ["returns early", "abort", "deadline", "client cancel"])
def test_unread_request_bytes_are_credited_back(ending: str) -> None:
    """Before the fix, each such call leaked up to 1 MiB of connection window; after
    ~16 calls (16 MiB) every RPC on the channel, even a 4-byte one, timed out."""
    read = threading.Event()
    with serve(handlers=_early_end_handlers(read)) as running, running.channel() as ch:
        for _ in range(24):
            read.clear()
            if ending == "returns early":
                assert ch.stream_unary(f"/{SERVICE}/ReturnsEarly")(_upload(), timeout=TIMEOUT) == b"done"
            elif ending == "abort":
                with pytest.raises(grpc.RpcError) as info:
                    ch.stream_unary(f"/{SERVICE}/Aborts")(_upload(), timeout=TIMEOUT)
                assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            elif ending == "deadline":
                with pytest.raises(grpc.RpcError) as info:
                    ch.stream_unary(f"/{SERVICE}/Waits")(_upload(), timeout=0.3)
                assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            else:
                future = ch.stream_unary(f"/{SERVICE}/Waits").future(_upload(), timeout=TIMEOUT)
                assert read.wait(TIMEOUT)
                time.sleep(0.1)
                future.cancel()
        assert ch.unary_unary(f"/{SERVICE}/Echo")(b"ping", timeout=5) == b"ping"


# --- 3. a SETTINGS frame that opens every stream's window wakes blocked writers ----------


def test_initial_window_increase_by_settings_wakes_a_blocked_stream(peers: List[H2Peer]) -> None:
    """grpc-core and grpc-go clients grow their windows with SETTINGS_INITIAL_WINDOW_SIZE."""

    def forty(request: bytes, context: Any) -> Iterator[bytes]:
        for index in range(40):
            yield bytes([index]) * (8 * KiB)

    handlers = _handlers({"Forty": grpc.unary_stream_rpc_method_handler(forty)})
    with serve(handlers=handlers) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        # A large connection window at once, so only the stream window is shut.
        peer.conn.increment_flow_control_window(64 * MiB)
        sid = peer.start(f"/{SERVICE}/Forty", body=grpc_frame(b""))
        # No stream WINDOW_UPDATE: the default 65535 takes 7 messages and a bit.
        peer.pump_until(lambda: len(peer.data.get(sid, b"")) >= 65535 - 9, ack=False)
        time.sleep(0.2)
        peer.pump(ack=False)
        assert len(peer.data[sid]) == 65535
        peer.conn.update_settings({H2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 * MiB})
        peer.flush()
        assert peer.pump_until(lambda: sid in peer.ended, ack=False), "the stream stalled"
        messages = grpc_messages(peer.data[sid])
        assert [payload[0] for _, payload in messages] == list(range(40))
        assert peer.status(sid) == "0"


# --- 4. oversized metadata refuses that call only ------------------------------------------


def test_oversized_metadata_fails_one_call_and_keeps_the_connection() -> None:
    started = threading.Event()
    release = threading.Event()

    def slow(request: bytes, context: Any) -> bytes:
        started.set()
        release.wait(TIMEOUT)
        return b"slow done"

    handlers = _handlers({"Slow": grpc.unary_unary_rpc_method_handler(slow)})
    with serve(handlers=handlers) as running, running.channel() as ch:
        in_flight = ch.unary_unary(f"/{SERVICE}/Slow").future(b"", timeout=TIMEOUT)
        assert started.wait(TIMEOUT)
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(f"/{SERVICE}/Echo")(b"x", metadata=[("x-big", "v" * 40000)], timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        assert in_flight.result() == b"slow done"  # the unrelated call was not killed
        assert ch.unary_unary(f"/{SERVICE}/Echo")(b"after", timeout=TIMEOUT) == b"after"


def test_oversized_metadata_on_the_wire(peers: List[H2Peer]) -> None:
    with serve(handlers=_handlers({})) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        big = peer.start(f"/{SERVICE}/Echo", ("x-big", "v" * 40000), body=grpc_frame(b"x"), end=False)
        assert peer.pump_until(lambda: big in peer.ended or big in peer.resets)
        assert peer.status(big) == "8"  # RESOURCE_EXHAUSTED, as a Trailers-Only response
        assert "limit" in peer.headers[big].get("grpc-message", "")
        assert peer.goaway is None
        ok = peer.start(f"/{SERVICE}/Echo", body=grpc_frame(b"y"))
        assert peer.pump_until(lambda: ok in peer.ended)
        assert peer.status(ok) == "0" and grpc_messages(peer.data[ok]) == [(False, b"y")]


# --- 5. a client that never reads its responses cannot grow server memory ----------------


@pytest.mark.parametrize("how", ["shut window", "unread socket"])
def test_unread_responses_are_bounded(how: str, peers: List[H2Peer]) -> None:
    """400 requests for 300 KB answers (120 MB if all were made). The connection's
    unsent output is bounded (OUTPUT_LIMIT): its further calls wait, unrun, until the
    client takes what it was sent; then every answer arrives, nothing lost."""
    count, size = 400, 300_000
    with serve(handlers=_handlers({})) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        if how == "shut window":
            peer.conn.increment_flow_control_window(256 * MiB)  # streams stay at 64 KiB
        base = rss()
        sids = [peer.start(f"/{SERVICE}/Sized", body=grpc_frame(str(size).encode())) for _ in range(count)]
        peak = 0
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            if how == "shut window":
                peer.pump(ack=False, timeout=0.05)
            else:
                time.sleep(0.05)
            peak = max(peak, rss() - base)
        # Bound: OUTPUT_LIMIT, plus the answers of calls already running when it was
        # passed (at most one per handler thread), plus the engine's own buffers.
        bound = 4 * MiB + 16 * size + 16 * MiB  # OUTPUT_LIMIT is 4 MiB (README)
        print(f"unread responses ({how}): RSS grew {peak / MiB:.1f} MiB at most (bound {bound / MiB:.1f} MiB)")
        assert peak < bound, f"RSS grew {peak / MiB:.1f} MiB (bound {bound / MiB:.1f} MiB)"
        # Another client is still served meanwhile.
        with running.channel() as ch:
            assert ch.unary_unary(f"/{SERVICE}/Echo")(b"other", timeout=TIMEOUT) == b"other"
        # Now read everything: every answer arrives.
        assert peer.pump_until(lambda: all(s in peer.ended for s in sids), ack=True, timeout=60)
        for sid in sids:
            assert peer.status(sid) == "0"
            assert len(peer.data[sid]) == size + 5


# --- 6. unfinished request messages are bounded per connection ----------------------------


@pytest.mark.parametrize("streams, method", [(40, "Count"), (1000, "Echo")])
def test_unfinished_messages_are_bounded(streams: int, method: str, peers: List[H2Peer]) -> None:
    """Streams each declaring a 4 MiB message and never finishing it (4 GiB for 1,000
    if all were taken in). Past CREDIT_LIMIT only a leader is credited (one message),
    so what the connection holds stays under CREDIT_LIMIT + two messages + the streams'
    windows (MAX_GROWN_STREAMS of them grown); no call fails and none stalls another
    connection. 40 client-streaming calls (each handler blocked reading holds a thread,
    as in grpcio), and 1,000 unary calls (each waits for its request holding none)."""

    def count(requests: Iterator[bytes], context: Any) -> bytes:
        return str(sum(1 for _ in requests)).encode()

    # 40 handlers blocked reading take 40 threads (one per call, as grpcio): leave room.
    handlers = _handlers({"Count": grpc.stream_unary_rpc_method_handler(count)})
    with serve(handlers=handlers, workers=64) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        base = rss()
        declared = 4 * MiB - 100
        prefix = b"\x00" + declared.to_bytes(4, "big")
        sids = [peer.start(f"/{SERVICE}/{method}", body=prefix, end=False) for _ in range(streams)]
        chunk = b"p" * (16 * KiB)
        sent = {sid: 0 for sid in sids}
        end = time.monotonic() + 30.0
        quiet = 0.0
        while quiet < 1.0 and time.monotonic() < end:  # until the windows stay shut for 1 s
            progressed = False
            for sid in sids:
                if sid in peer.ended or sid in peer.resets:
                    continue  # failed by the server (below)
                room = min(peer.conn.local_flow_control_window(sid), declared - 1 - sent[sid], len(chunk))
                if room > 0:
                    peer.conn.send_data(sid, chunk[:room])
                    sent[sid] += room
                    progressed = True
            peer.flush()
            peer.pump(timeout=0.01 if progressed else 0.1)
            quiet = 0.0 if progressed else quiet + 0.1
        taken = sum(sent.values())
        grown = rss() - base
        failed = sorted(peer.ended | set(peer.resets))
        print(
            f"unfinished messages on {streams} streams: the client sent {taken / MiB:.1f} MiB, "
            f"RSS grew {grown / MiB:.1f} MiB, {len(failed)} calls failed"
        )
        assert not failed, [peer.trailers.get(sid) for sid in failed]
        bound = CREDIT_LIMIT + 2 * 4 * MiB + streams * LOOKAHEAD + MAX_GROWN_STREAMS * STREAM_WINDOW_GROWN
        assert taken <= bound + 16 * KiB * streams, f"the client could send {taken / MiB:.1f} MiB"
        assert grown < bound + 16 * MiB, f"RSS grew {grown / MiB:.1f} MiB"
        # A well-behaved client on another connection is served meanwhile.
        with running.channel() as ch:
            assert ch.unary_unary(f"/{SERVICE}/Echo")(b"other", timeout=TIMEOUT) == b"other"


def test_a_handler_not_reading_holds_its_requests_bounded() -> None:
    """A handler that does not read: the first complete message is credited whatever
    its size (one message is bounded by max_receive), so a message just over 1 MiB
    never waits for the handler to be credited; past it, once more than 1 MiB of
    complete messages is queued, the call's WINDOW_UPDATE is withheld until the handler
    has read them down to half, so the client can send at most the stream's window
    more (64 KiB, grown to fit a larger message). Nothing is lost."""
    gate = threading.Event()

    def gated(requests: Iterator[bytes], context: Any) -> bytes:
        gate.wait(TIMEOUT)
        return b",".join(str(len(r)).encode() for r in requests)

    size = MiB + 512 * KiB
    messages = [bytes([n]) * size for n in range(4)]
    body = b"".join(grpc_frame(m) for m in messages)
    with serve(handlers=_handlers({"Gated": grpc.stream_unary_rpc_method_handler(gated)})) as running:
        peer = H2Peer(running.port)
        try:
            sid = peer.start(f"/{SERVICE}/Gated", end=False)
            sent = 0

            def send_what_the_window_allows() -> bool:
                nonlocal sent
                room = min(peer.conn.local_flow_control_window(sid), len(body) - sent, 16 * KiB)
                if room <= 0:
                    return False
                peer.conn.send_data(sid, body[sent : sent + room], end_stream=sent + room == len(body))
                sent += room
                peer.flush()
                return True

            stalled_for = 0.0
            while stalled_for < 1.0 and sent < len(body):
                if not send_what_the_window_allows():
                    peer.pump(timeout=0.1)
                    stalled_for += 0.1
            held = sent
            # Two messages in full (the first credited though over 1 MiB), then at most
            # the stream window more (grown to fit one message); not the whole body.
            assert 2 * (size + 5) <= held <= 3 * (size + 5) + 16 * KiB, held
            gate.set()
            end = time.monotonic() + TIMEOUT
            while sent < len(body) and time.monotonic() < end:
                if not send_what_the_window_allows():
                    peer.pump(timeout=0.05)
            assert sent == len(body), "the window was never reopened"
            assert peer.pump_until(lambda: sid in peer.ended)
            assert peer.status(sid) == "0"
            assert peer.data[sid] == grpc_frame(b",".join([str(size).encode()] * 4))
        finally:
            gate.set()
            peer.close()


def test_a_call_that_takes_its_messages_gets_a_larger_window(peers: List[H2Peer]) -> None:
    """Once a handler has taken 1 MiB of whole messages as they came, its stream's receive
    window grows to 4 MiB (fewer WINDOW_UPDATEs, no sender waiting for one); a call
    whose message never ends gets a window that fits that message only."""
    from puregrpc._call import STREAM_WINDOW_GROWN

    taken = Recorder()

    def count(requests: Iterator[bytes], context: Any) -> bytes:
        n = 0
        for _ in requests:
            n += 1
            taken.add(n)
        return str(n).encode()

    handlers = _handlers({"Count": grpc.stream_unary_rpc_method_handler(count)})
    with serve(handlers=handlers) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        growing = peer.start(f"/{SERVICE}/Count", end=False)
        stuck = peer.start(f"/{SERVICE}/Count", end=False)
        message = grpc_frame(b"m" * (256 * KiB))
        for n in range(1, 6):  # 4 x 256 KiB taken, then the fifth message grows the window
            sent = 0
            while sent < len(message):
                room = min(peer.conn.local_flow_control_window(growing), len(message) - sent, 16 * KiB)
                if room <= 0:
                    peer.flush()
                    peer.pump(timeout=0.05)
                    continue
                peer.conn.send_data(growing, message[sent : sent + room])
                sent += room
            peer.flush()
            assert taken.wait_for(n)
        # An unfinished message on the other call: part of it, never its end.
        partial = b"\x00" + (2 * MiB).to_bytes(4, "big") + b"s" * (512 * KiB)
        sent = 0
        end = time.monotonic() + TIMEOUT
        while sent < len(partial) and time.monotonic() < end:
            room = min(peer.conn.local_flow_control_window(stuck), len(partial) - sent, 16 * KiB)
            if room <= 0:
                peer.flush()
                peer.pump(timeout=0.05)
                continue
            peer.conn.send_data(stuck, partial[sent : sent + room])
            sent += room
        peer.flush()
        assert peer.pump_until(lambda: peer.conn.local_flow_control_window(growing) > 2 * MiB)
        peer.pump(timeout=0.3)
        assert peer.conn.local_flow_control_window(growing) <= STREAM_WINDOW_GROWN
        # The unfinished message grew its window to fit it (2 MiB + 5), not to 4 MiB.
        assert sent + peer.conn.local_flow_control_window(stuck) == 2 * MiB + 5
        peer.conn.end_stream(growing)
        peer.flush()
        assert peer.pump_until(lambda: growing in peer.ended)
        assert peer.data[growing] == grpc_frame(b"5")


def _total(requests: Iterator[bytes], context: Any) -> bytes:
    return str(sum(len(r) for r in requests)).encode()


def test_many_large_uploads_at_once_all_complete() -> None:
    """The bound must not wedge honest traffic: 32 concurrent 4 MiB messages on one
    channel (128 MiB, eight times CREDIT_LIMIT) all arrive, round after round."""
    handlers = _handlers({"Total": grpc.stream_unary_rpc_method_handler(_total)})
    size = 4 * MiB - 64
    with serve(handlers=handlers, workers=40) as running, running.channel() as ch:
        call = ch.stream_unary(f"/{SERVICE}/Total")
        for _ in range(3):
            futures = [call.future(iter([bytes([n]) * size]), timeout=30) for n in range(32)]
            assert [f.result() for f in futures] == [str(size).encode()] * 32


def test_64_large_uploads_at_once_all_complete() -> None:
    """64 x 4 MiB at once on one connection (256 MiB, sixteen times CREDIT_LIMIT): every
    call completes, none fails and none hangs."""
    handlers = _handlers({"Total": grpc.stream_unary_rpc_method_handler(_total)})
    size = 4 * MiB - 64
    with serve(handlers=handlers, workers=72) as running, running.channel() as ch:
        call = ch.stream_unary(f"/{SERVICE}/Total")
        futures = [call.future(iter([bytes([n % 256]) * size]), timeout=30) for n in range(64)]
        assert [f.result() for f in futures] == [str(size).encode()] * 64
        assert call(iter([b"after"]), timeout=TIMEOUT) == b"5"


def test_large_messages_on_interleaved_streams_arrive_byte_exact() -> None:
    """Random messages from 5 bytes to just over 1 MiB on 8 streams at once: their DATA
    frames reach the decoder as views of the reads where they run long, cut anywhere by
    frames, reads and each other. Every byte arrives (a digest per message)."""

    def digests(requests: Iterator[bytes], context: Any) -> bytes:
        return b"".join(hashlib.sha256(r).digest() for r in requests)

    rng = random.Random(11)
    sizes = (5, 40_000, 65_536, 300_001, MiB + 3)
    calls = [[rng.randbytes(rng.choice(sizes)) for _ in range(6)] for _ in range(8)]
    handlers = _handlers({"Digests": grpc.stream_unary_rpc_method_handler(digests)})
    with serve(handlers=handlers, workers=8) as running, running.channel() as ch:
        call = ch.stream_unary(f"/{SERVICE}/Digests")
        for _ in range(2):
            futures = [call.future(iter(messages), timeout=30) for messages in calls]
            for messages, future in zip(calls, futures):
                assert future.result() == b"".join(hashlib.sha256(m).digest() for m in messages)


def test_uploads_beyond_the_pool_all_complete() -> None:
    """40 client-streaming calls of 8 x 1 MiB on one channel to a pool of 4 threads: the
    36 calls waiting for a thread hold request bytes nobody reads yet. They must not
    hold the connection window the 4 running handlers need for their next messages
    (that wedged every call to its deadline: only the connection window was left to
    withhold, and they had all of it)."""
    handlers = _handlers({"Total": grpc.stream_unary_rpc_method_handler(_total)})
    with serve(handlers=handlers, workers=4) as running, running.channel() as ch:
        call = ch.stream_unary(f"/{SERVICE}/Total")
        messages = [bytes([n]) * MiB for n in range(8)]
        futures = [call.future(iter(messages), timeout=30) for _ in range(40)]
        assert [f.result() for f in futures] == [str(8 * MiB).encode()] * 40
        # Every byte counted in was counted out: nothing held, nothing drifted.
        (conn,) = running.server._core.connections  # type: ignore[attr-defined]
        assert wait_for(lambda: conn.unread == 0 and not conn._credit_held), (conn.unread, conn._credit_held)
        assert conn.grown_streams == 0


def test_past_the_credit_bound_a_reader_and_a_unary_request_still_complete() -> None:
    """40 calls whose handlers do not read (until a gate opens) hold more than
    CREDIT_LIMIT on one connection, so its streams get no more credit. A unary call
    with a 1 MiB request (larger than its 64 KiB window) and a client-streaming call
    whose handler reads (4 x 1 MiB) on the same connection still complete: each is
    credited as a leader (the request, the blocked reader)."""
    gate = threading.Event()
    started = Recorder()

    def gated(requests: Iterator[bytes], context: Any) -> bytes:
        started.add(threading.get_ident())
        if len(started.events) == 40:
            started.add("all")
        gate.wait(TIMEOUT * 3)
        return _total(requests, context)

    handlers = _handlers(
        {
            "Gated": grpc.stream_unary_rpc_method_handler(gated),
            "Total": grpc.stream_unary_rpc_method_handler(_total),
        }
    )
    with serve(handlers=handlers, workers=48) as running, running.channel() as ch:
        messages = [bytes([n]) * MiB for n in range(4)]
        gated_calls = [ch.stream_unary(f"/{SERVICE}/Gated").future(iter(messages), timeout=60) for _ in range(40)]
        try:
            assert started.wait_for("all")
            time.sleep(0.5)  # their messages arrive and fill the bound
            (conn,) = running.server._core.connections  # type: ignore[attr-defined]
            assert conn.unread > CREDIT_LIMIT, conn.unread
            request = b"u" * MiB
            assert ch.unary_unary(f"/{SERVICE}/Echo")(request, timeout=TIMEOUT) == request
            total = ch.stream_unary(f"/{SERVICE}/Total")(iter(messages), timeout=TIMEOUT)
            assert total == str(4 * MiB).encode()
        finally:
            gate.set()
        assert [f.result() for f in gated_calls] == [str(4 * MiB).encode()] * 40
        assert wait_for(lambda: conn.unread == 0 and not conn._credit_held), (conn.unread, conn._credit_held)
        assert conn.grown_streams == 0


def test_calls_waiting_for_a_worker_hold_a_bounded_amount(peers: List[H2Peer]) -> None:
    """100 client-streaming calls on one connection send 64 KiB messages while the one
    worker thread is held by a gated handler: nobody reads them. The server credits
    them only up to CREDIT_LIMIT in all (it was 1 MiB of queued messages per call, and
    then the stream window again); past that, a client can fill only the streams'
    windows. When the gate opens, every call completes with all its messages."""
    gate = threading.Event()

    def gated(requests: Iterator[bytes], context: Any) -> bytes:
        gate.wait(TIMEOUT)
        return _total(requests, context)

    handlers = _handlers({"Gated": grpc.stream_unary_rpc_method_handler(gated)})
    with serve(handlers=handlers, workers=1) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        sids = [peer.start(f"/{SERVICE}/Gated", end=False) for _ in range(100)]
        message = grpc_frame(b"q" * (64 * KiB))
        sent = {sid: 0 for sid in sids}
        limit = 8 * len(message)  # per call: 512 KiB, more than the bound lets through

        def send_what_the_windows_allow() -> bool:
            progressed = False
            for sid in sids:
                room = min(peer.conn.local_flow_control_window(sid), limit - sent[sid], 16 * KiB)
                if room > 0:
                    start = sent[sid] % len(message)
                    room = min(room, len(message) - start)
                    sent[sid] += room
                    # Each call ends once all its messages are out: the one worker runs
                    # the calls one after another.
                    peer.conn.send_data(sid, message[start : start + room], end_stream=sent[sid] == limit)
                    progressed = True
            peer.flush()
            return progressed

        quiet = 0.0
        while quiet < 1.0:
            if send_what_the_windows_allow():
                peer.pump(timeout=0.01)
            else:
                peer.pump(timeout=0.1)
                quiet += 0.1
        taken = sum(sent.values())
        bound = CREDIT_LIMIT + 100 * LOOKAHEAD + MAX_GROWN_STREAMS * len(message)
        print(f"calls waiting for a worker: the client could send {taken / MiB:.1f} MiB (bound {bound / MiB:.0f})")
        assert taken <= bound + 100 * 16 * KiB, f"the client could send {taken / MiB:.1f} MiB"
        # Open the gate; finish every call with the rest of its messages.
        gate.set()
        end = time.monotonic() + 60
        while min(sent.values()) < limit and time.monotonic() < end:
            if not send_what_the_windows_allow():
                peer.pump(timeout=0.05)
        assert min(sent.values()) == limit, "a call's window was never reopened"
        assert peer.pump_until(lambda: all(sid in peer.ended for sid in sids), timeout=60)
        for sid in sids:
            assert peer.status(sid) == "0", peer.trailers.get(sid)
            assert peer.data[sid] == grpc_frame(str(8 * 64 * KiB).encode())


# --- 9. and 10. a server-side end reaches the client as a status ---------------------------


def test_deadline_behind_blocked_output_sends_the_status(peers: List[H2Peer]) -> None:
    def flood(request: bytes, context: Any) -> Iterator[bytes]:
        while context.is_active():
            yield b"f" * (16 * KiB)

    with serve(handlers=_handlers({"Flood": grpc.unary_stream_rpc_method_handler(flood)})) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        sid = peer.start(f"/{SERVICE}/Flood", ("grpc-timeout", "300m"), body=grpc_frame(b""))
        end = time.monotonic() + 0.6  # past the deadline, the stream window still shut
        while time.monotonic() < end:
            peer.pump(ack=False, timeout=0.05)
        assert sid not in peer.resets
        # The client takes the data now: the trailers that waited behind it follow.
        assert peer.pump_until(lambda: sid in peer.ended or sid in peer.resets, ack=True)
        assert sid not in peer.resets, f"reset with {peer.resets.get(sid)} instead of a status"
        assert peer.status(sid) == "4"  # DEADLINE_EXCEEDED


def test_deadline_with_request_still_open_resets_with_no_error(peers: List[H2Peer]) -> None:
    """RFC 9113 8.1, as grpcio: the status, then RST_STREAM(NO_ERROR) so the client
    stops sending a request nobody will read."""

    def waits(requests: Iterator[bytes], context: Any) -> bytes:
        while context.is_active():
            time.sleep(0.01)
        return b""

    with serve(handlers=_handlers({"Waits": grpc.stream_unary_rpc_method_handler(waits)})) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        sid = peer.start(f"/{SERVICE}/Waits", ("grpc-timeout", "200m"), body=grpc_frame(b"a"), end=False)
        assert peer.pump_until(lambda: sid in peer.resets)
        assert peer.status(sid) == "4"
        assert peer.resets[sid] == 0  # NO_ERROR


def test_each_deadline_on_a_connection_ends_its_call_on_time(peers: List[H2Peer]) -> None:
    """A connection has one timer for all its calls' deadlines: a later call with an
    earlier deadline must bring it forward, and a call that ended before its deadline
    must not leave the next one unserved. The client here enforces no deadline itself."""
    ended: Dict[str, float] = {}

    def waits(request: bytes, context: Any) -> bytes:
        if request == b"quick":
            return b""
        context.add_callback(lambda: ended.__setitem__(request.decode(), time.monotonic()))
        while context.is_active():
            time.sleep(0.005)
        return b""

    with serve(handlers=_handlers({"Waits": grpc.unary_unary_rpc_method_handler(waits)})) as running:
        peer = H2Peer(running.port)
        peers.append(peer)
        started = time.monotonic()
        long = peer.start(f"/{SERVICE}/Waits", ("grpc-timeout", "2S"), body=grpc_frame(b"long"))
        quick = peer.start(f"/{SERVICE}/Waits", ("grpc-timeout", "200m"), body=grpc_frame(b"quick"))
        short = peer.start(f"/{SERVICE}/Waits", ("grpc-timeout", "400m"), body=grpc_frame(b"short"))
        assert peer.pump_until(lambda: short in peer.ended and quick in peer.ended, timeout=3)
        assert peer.status(quick) == "0"
        assert peer.status(short) == "4"  # DEADLINE_EXCEEDED
        assert long not in peer.ended
        # After the quick call ended, its deadline (200 ms) found nothing due; the short
        # one's (400 ms), behind the long one's (2 s), still ended it on time.
        assert peer.pump_until(lambda: "short" in ended, timeout=3)
        assert 0.35 <= ended["short"] - started < 1.0, ended["short"] - started
        later = peer.start(f"/{SERVICE}/Waits", ("grpc-timeout", "300m"), body=grpc_frame(b"later"))
        later_started = time.monotonic()
        assert peer.pump_until(lambda: later in peer.ended, timeout=3)
        assert peer.status(later) == "4"
        assert peer.pump_until(lambda: "later" in ended, timeout=3)
        assert 0.25 <= ended["later"] - later_started < 0.9, ended["later"] - later_started
        assert peer.pump_until(lambda: long in peer.ended, timeout=5)
        assert peer.status(long) == "4"
        assert peer.pump_until(lambda: "long" in ended, timeout=3)  # callbacks run after the status
        assert 1.9 <= ended["long"] - started < 3.0, ended["long"] - started


def test_grace_expiry_behind_blocked_output_is_unavailable() -> None:
    """With grpcio's client: a stream whose output the client is not taking when the
    grace period ends fails UNAVAILABLE, not CANCELLED."""
    entered = threading.Event()

    def flood(request: bytes, context: Any) -> Iterator[bytes]:
        entered.set()
        while context.is_active():
            yield b"f" * (64 * KiB)

    handlers = _handlers({"Flood": grpc.unary_stream_rpc_method_handler(flood)})
    with serve(handlers=handlers) as running, running.channel() as ch:
        call = ch.unary_stream(f"/{SERVICE}/Flood")(b"", timeout=TIMEOUT)
        first = next(call)  # then stop reading: the output backs up
        assert first
        assert entered.wait(TIMEOUT)
        time.sleep(0.3)
        running.server.stop(0.3).wait(TIMEOUT)
        with pytest.raises(grpc.RpcError) as info:
            for _ in call:
                pass
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE


# --- 11. an unknown method is answered at once, even with every thread busy -----------------


def test_unimplemented_while_the_pool_is_saturated() -> None:
    release = threading.Event()
    entered = Recorder()

    def block(request: bytes, context: Any) -> bytes:
        entered.add(request)
        release.wait(TIMEOUT)
        return request

    handlers = _handlers({"Block": grpc.unary_unary_rpc_method_handler(block)})
    with serve(handlers=handlers, workers=2) as running, running.channel() as ch:
        blocked = [ch.unary_unary(f"/{SERVICE}/Block").future(bytes([n]), timeout=TIMEOUT) for n in range(2)]
        assert entered.wait_for(b"\x00") and entered.wait_for(b"\x01")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        assert time.monotonic() - started < 2.0
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/no.such.Service/Method")(b"", timeout=5)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        release.set()
        assert [f.result() for f in blocked] == [b"\x00", b"\x01"]


def test_unknown_method_with_a_custom_generic_handler_still_answers() -> None:
    """A generic handler of the user's own kind is user code: it is asked on a handler
    thread, and an unknown method still ends UNIMPLEMENTED."""

    class Custom(grpc.GenericRpcHandler):
        def service(self, details: Any) -> Any:
            if details.method == "/custom.S/M":
                return grpc.unary_unary_rpc_method_handler(lambda request, context: b"custom")
            return None

    with serve(handlers=[Custom()]) as running, running.channel() as ch:
        assert ch.unary_unary("/custom.S/M")(b"", timeout=TIMEOUT) == b"custom"
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary("/custom.S/Other")(b"", timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


# --- 13. metadata values with surrounding whitespace are served -----------------------------


def test_padded_metadata_values_from_grpcio_are_served() -> None:
    with serve(handlers=_handlers({})) as running, running.channel() as ch:
        reply = ch.unary_unary(f"/{SERVICE}/Metadata")(
            b"", metadata=[("x-lead", " v1"), ("x-trail", "v2 "), ("x-inner", "a b")], timeout=TIMEOUT
        )
        seen = dict(eval(reply.decode()))  # a repr of sorted (key, value) pairs
        assert seen["x-lead"] == "v1" and seen["x-trail"] == "v2" and seen["x-inner"] == "a b"


# --- also seen: concurrent registration, and GC of a Server on the I/O thread ----------------


def test_concurrent_add_generic_rpc_handlers_loses_none() -> None:
    pool = ThreadPoolExecutor(4)
    server = puregrpc.server(pool)
    try:
        barrier = threading.Barrier(8)

        def add(n: int) -> None:
            handler = grpc.method_handlers_generic_handler(
                f"s{n}.S", {"M": grpc.unary_unary_rpc_method_handler(lambda r, c, n=n: str(n).encode())}
            )
            barrier.wait()
            for _ in range(50):
                server.add_generic_rpc_handlers([handler])

        threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(server._core.registry.generic) == 8 * 50
    finally:
        server.stop(None)
        pool.shutdown()


def test_server_collected_on_the_io_thread_drains_on_its_own_iteration() -> None:
    """A cyclic-GC collection can run ``Server.__del__`` on the I/O thread in the middle
    of engine code: it must only schedule the drain, not run it inline."""
    pool = ThreadPoolExecutor(2)
    box = [puregrpc.server(pool, handlers=_handlers({}))]
    port = box[0].add_insecure_port("localhost:0")
    box[0].start()
    core = box[0]._core
    state_after_del: List[Any] = []

    def drop_on_loop() -> None:
        box.clear()  # the last reference: __del__ runs here, on the I/O thread
        state_after_del.append(core.lifecycle.state)

    core.io.call(drop_on_loop)
    assert state_after_del == [puregrpc._lifecycle.State.SERVING]  # nothing ran inline
    assert not core.lifecycle.wait(TIMEOUT)  # and the drain followed: terminated
    with grpc.insecure_channel(f"localhost:{port}") as ch, pytest.raises(grpc.RpcError):
        ch.unary_unary(f"/{SERVICE}/Echo")(b"", timeout=1)
    pool.shutdown()


def test_termination_does_not_cut_off_a_finished_response_waiting_for_window() -> None:
    """A unary answer larger than the client's window is complete on the server (the
    call is over) but partly unsent when the server terminates: the connection stays
    until it is out, and the client gets all of it and the status. Raw frames: the h2
    library takes nothing after a GOAWAY."""
    import hpack

    with (
        serve(handlers=_handlers({})) as running,
        socket.create_connection(("localhost", running.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(CLIENT_PREFACE + raw_request(1, f"/{SERVICE}/Sized", b"200000"))

        def data_of(frames: List[Frame]) -> int:
            return sum(len(f[3]) for f in frames if f[0] == 0x0 and f[2] == 1)

        first = read_frames(sock, lambda frames: data_of(frames) >= 65535)
        assert data_of(first) == 65535  # the default stream window, then nothing
        assert running.server.stop(5).wait(TIMEOUT)  # no RPC left: terminated at once
        update = (1 << 20).to_bytes(4, "big")
        sock.sendall(frame_bytes(0x8, 0, 0, update) + frame_bytes(0x8, 0, 1, update))
        rest = read_frames(sock, lambda frames: any(f[0] == 0x1 and f[1] & 0x1 and f[2] == 1 for f in frames))
    assert data_of(first) + data_of(rest) == 200000 + 5, "the response was cut off"
    trailers = [hpack.Decoder().decode(f[3]) for f in rest if f[0] == 0x1 and f[2] == 1]
    assert trailers and ("grpc-status", "0") in trailers[-1]


def test_connections_after_clients_that_reset_mid_stream_are_served() -> None:
    """Clients that vanish (TCP reset) while a sync handler streams large messages to
    them. The reset aborts the transport and connection_lost follows a callback later;
    a thread's answer drained in between used to reach asyncio's writelines() (3.12,
    3.13), which registered the socket for writing after the abort had let it go. The
    next connection given that file descriptor was then never read (ENOENT in the
    selector), and its calls hung until their deadline."""

    def flood(request: bytes, context: Any) -> Iterator[bytes]:
        while context.is_active():
            yield b"f" * (256 * KiB)

    big = (16 * MiB).to_bytes(4, "big")
    opening = (
        CLIENT_PREFACE
        + frame_bytes(0x4, 0, 0, (4).to_bytes(2, "big") + big)  # SETTINGS_INITIAL_WINDOW_SIZE
        + frame_bytes(0x8, 0, 0, big)  # the connection's window
        + raw_request(1, f"/{SERVICE}/Flood", b"")
    )
    with serve(handlers=_handlers({"Flood": grpc.unary_stream_rpc_method_handler(flood)})) as running:
        for attempt in range(12):
            sock = socket.create_connection(("127.0.0.1", running.port))
            sock.sendall(opening)
            received = 0
            while received < 2 * MiB:
                chunk = sock.recv(1 << 20)
                assert chunk, "the server closed the connection"
                received += len(chunk)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset, with the server's answers still coming
            with running.channel() as ch:
                echo = ch.unary_unary(f"/{SERVICE}/Echo")
                assert echo(b"after %d" % attempt, timeout=5) == b"after %d" % attempt


def test_each_call_on_a_connection_sees_its_own_headers() -> None:
    """Requests on one connection whose header blocks repeat share the parse of the
    first (RequestReceived.memo): each handler still sees its own call's method,
    metadata and deadline, in any order of repeats."""
    seen: List[Tuple[str, str, Optional[float]]] = []

    def probe(request: bytes, context: Any) -> bytes:
        metadata = dict(context.invocation_metadata())
        seen.append((request.decode(), metadata.get("x-v", "-"), context.time_remaining()))
        return request

    names = ("A", "B")
    generic = grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(probe) for name in names}
    )
    plan = [(names[i % 2], ("x-v", str(i % 3)), 30.0 if i % 5 == 0 else None) for i in range(60)]
    with serve(handlers=[generic]) as running, running.channel() as ch:
        for name, item, timeout in plan:
            method = ch.unary_unary(f"/{SERVICE}/{name}")
            assert method(name.encode(), metadata=[item], timeout=timeout) == name.encode()
    assert [(name, value) for name, value, _ in seen] == [(name, item[1]) for name, item, _ in plan]
    for (_, _, remaining), (_, _, timeout) in zip(seen, plan):
        if timeout is None:
            assert remaining is None
        else:
            assert remaining is not None and 25.0 < remaining <= 31.0  # the client rounds up


def test_each_call_sees_its_own_header_new_on_each_call() -> None:
    """grpcio's client sends a metadata value new on each call (a request or trace
    id) as a literal after the headers it repeats: the server reads those repeated
    headers once (RequestReceived.memo_fields), and each handler still sees its own
    method, metadata, binary metadata and deadline."""
    seen: List[Tuple[str, Tuple[Tuple[str, Any], ...], Optional[float]]] = []

    def probe(request: bytes, context: Any) -> bytes:
        metadata = tuple((key, value) for key, value in context.invocation_metadata() if key.startswith("x-"))
        seen.append((request.decode(), metadata, context.time_remaining()))
        return request

    names = ("A", "B")
    generic = grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(probe) for name in names}
    )
    plan = []
    for i in range(60):
        metadata: Tuple[Tuple[str, Any], ...] = (("x-request-id", f"{i:016x}"),)
        if i % 3 == 0:
            metadata += (("x-trace-bin", i.to_bytes(4, "big")), ("x-kind", "constant"))
        plan.append((names[i % 2], metadata, 30.0 if i % 4 == 0 else None))
    with serve(handlers=[generic]) as running, running.channel() as ch:
        for name, metadata, timeout in plan:
            method = ch.unary_unary(f"/{SERVICE}/{name}")
            assert method(name.encode(), metadata=metadata, timeout=timeout) == name.encode()
    assert [(name, metadata) for name, metadata, _ in seen] == [(name, metadata) for name, metadata, _ in plan]
    for (_, _, remaining), (_, _, timeout) in zip(seen, plan):
        if timeout is None:
            assert remaining is None
        else:
            assert remaining is not None and 25.0 < remaining <= 31.0
