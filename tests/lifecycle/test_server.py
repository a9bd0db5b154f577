"""The server lifecycle in-process (lifecycle.md 1-19 and its acceptance scenarios).

Margins are the spec's: 50 ms for waiter release, 100 ms for refusals.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, List, Optional, Tuple

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from echo_servicer import EchoServicer

import puregrpc

TIMEOUT = 10.0


class Harness:
    def __init__(self, echo_pb: Tuple[Any, Any]) -> None:
        self.pb, self.pb_grpc = echo_pb
        self.pool = ThreadPoolExecutor(max_workers=32)
        self.server = puregrpc.server(self.pool)
        self.pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(self.pb), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.channels: List[grpc.Channel] = []

    def stub(self) -> Any:
        channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.channels.append(channel)
        return self.pb_grpc.EchoServiceStub(channel)

    def request(self, **fields: Any) -> Any:
        return self.pb.EchoRequest(**fields)

    def close(self) -> None:
        self.server.stop(None)
        for channel in self.channels:
            channel.close()
        self.pool.shutdown(wait=False)


@pytest.fixture()
def harness(echo_pb: Tuple[Any, Any]) -> Iterator[Harness]:
    h = Harness(echo_pb)
    yield h
    h.close()


def _connect_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # taken into the backlog as the listener closed: ask again
    return False


def _start_waiters(server: puregrpc.Server, count: int) -> Tuple[List[threading.Thread], List[Any]]:
    results: List[Any] = []
    lock = threading.Lock()
    ready = threading.Barrier(count + 1)

    def wait() -> None:
        ready.wait()
        value = server.wait_for_termination()
        with lock:
            results.append((value, time.monotonic()))

    threads = [threading.Thread(target=wait, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    ready.wait()
    time.sleep(0.05)  # let every waiter block
    return threads, results


# --- ports and start() (1-5) ----------------------------------------------------


def test_port_zero_picks_a_free_port_and_binds_at_once(harness: Harness) -> None:
    assert harness.port > 0
    socket.create_connection(("127.0.0.1", harness.port), timeout=1).close()  # 2: accepts TCP


def test_busy_port_raises_runtime_error_naming_the_address(harness: Harness) -> None:
    other = puregrpc.server(harness.pool)
    with pytest.raises(RuntimeError, match=f"127.0.0.1:{harness.port}"):
        other.add_insecure_port(f"127.0.0.1:{harness.port}")


def test_no_rpc_before_start(harness: Harness) -> None:
    with pytest.raises(grpc.RpcError) as info:
        harness.stub().Unary(harness.request(message="x"), timeout=0.5)
    assert info.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)


def test_start_rules(harness: Harness) -> None:
    harness.server.start()
    with pytest.raises(ValueError, match="already been started"):
        harness.server.start()
    with pytest.raises(RuntimeError, match="cannot add a port"):
        harness.server.add_insecure_port("127.0.0.1:0")
    harness.server.stop(None)
    with pytest.raises(ValueError, match="cannot be started again"):
        harness.server.start()


def test_start_does_not_block(harness: Harness) -> None:
    began = time.monotonic()
    harness.server.start()
    assert time.monotonic() - began < 0.5
    assert harness.stub().Unary(harness.request(message="hi"), timeout=TIMEOUT).message == "hi"


def test_handlers_after_start(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.server.start()
    late = puregrpc.method_handlers_generic_handler(
        "late.Service", {"Ping": puregrpc.unary_unary_rpc_method_handler(lambda req, ctx: b"pong")}
    )
    harness.server.add_generic_rpc_handlers((late,))
    with caplog.at_level(logging.WARNING, logger="puregrpc"):
        harness.server.add_registered_method_handlers(
            "later.Service", {"Ping": puregrpc.unary_unary_rpc_method_handler(lambda req, ctx: b"pong")}
        )
    assert "cannot be registered once the server has started" in caplog.text
    channel = grpc.insecure_channel(f"127.0.0.1:{harness.port}")
    harness.channels.append(channel)
    assert channel.unary_unary("/late.Service/Ping")(b"", timeout=TIMEOUT) == b"pong"
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/later.Service/Ping")(b"", timeout=TIMEOUT)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


# --- wait_for_termination (6-9) ----------------------------------------------------


def test_wait_timeout_returns_true_after_the_timeout(harness: Harness) -> None:
    harness.server.start()
    began = time.monotonic()
    assert harness.server.wait_for_termination(0.5) is True
    assert 0.5 <= time.monotonic() - began <= 0.55


def test_wait_in_the_main_thread_with_file_descriptors_past_1024(harness: Harness) -> None:
    """In the main thread the wait blocks on a socket the signal wakeup fd writes to
    (lifecycle.md 11); a busy server has many connections, so that socket may be past
    1024, where select() fails: the wait must not use it."""
    assert threading.current_thread() is threading.main_thread()
    harness.server.start()
    held: List[int] = []
    try:
        with open("/dev/null", "rb") as devnull:
            while not held or held[-1] < 1100:  # every lower descriptor is taken
                held.append(os.dup(devnull.fileno()))
            probe = socket.socket()
            assert probe.fileno() > 1024  # the wait's own sockets come after it
            probe.close()
            began = time.monotonic()
            assert harness.server.wait_for_termination(0.3) is True
            assert 0.3 <= time.monotonic() - began <= 0.35
            stopper = threading.Timer(0.2, harness.server.stop, args=(None,))
            stopper.start()
            assert harness.server.wait_for_termination(5) is False  # woken by the termination
            assert time.monotonic() - began < 0.3 + 0.2 + 0.1
    finally:
        for fd in held:
            os.close(fd)


@pytest.mark.parametrize("timeout", [0, -1])
def test_wait_zero_or_negative_polls(harness: Harness, timeout: float) -> None:
    harness.server.start()
    began = time.monotonic()
    assert harness.server.wait_for_termination(timeout) is True
    assert time.monotonic() - began < 0.01


def test_wait_after_termination_returns_false_at_once(harness: Harness) -> None:
    harness.server.start()
    harness.server.stop(None)
    began = time.monotonic()
    assert harness.server.wait_for_termination() is False
    assert harness.server.wait_for_termination(5) is False
    assert time.monotonic() - began < 0.01


def test_wait_before_start_blocks_until_a_later_start_and_stop(harness: Harness) -> None:
    threads, results = _start_waiters(harness.server, 1)
    assert harness.server.stop(0).is_set()  # stop before start: no change
    time.sleep(0.1)
    assert results == []
    harness.server.start()
    harness.server.stop(0)
    threads[0].join(1)
    assert [value for value, _ in results] == [False]


def test_wait_before_start_times_out(harness: Harness) -> None:
    assert harness.server.wait_for_termination(0.1) is True


@pytest.mark.parametrize("waiters", [1, 10, 100])
@pytest.mark.parametrize("grace", [None, 0, 1.0])
def test_fan_out_release_within_50ms(harness: Harness, waiters: int, grace: Optional[float]) -> None:
    harness.server.start()
    threads, results = _start_waiters(harness.server, waiters)
    stopped = time.monotonic()
    harness.server.stop(grace)
    for thread in threads:
        thread.join(2)
    assert len(results) == waiters
    assert all(value is False for value, _ in results)
    latencies = [at - stopped for _, at in results]
    print(
        f"\n{waiters} waiters, stop({grace}): release median "
        f"{statistics.median(latencies) * 1000:.2f} ms, max {max(latencies) * 1000:.2f} ms"
    )
    assert max(latencies) < 0.05


# --- stop(grace) (12-18) ----------------------------------------------------------


def _in_flight(harness: Harness, seconds: float) -> Tuple[threading.Thread, List[Any]]:
    outcome: List[Any] = []
    stub = harness.stub()

    def call() -> None:
        try:
            stub.Unary(harness.request(message="slow", sleep=seconds), timeout=TIMEOUT)
            outcome.append(("OK", time.monotonic()))
        except grpc.RpcError as exc:
            outcome.append((exc.code(), time.monotonic()))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    time.sleep(0.3)  # the RPC reaches its handler
    return thread, outcome


def test_stop_with_grace_cancels_a_long_rpc_at_the_grace(harness: Harness) -> None:
    harness.server.start()
    old_stub = harness.stub()
    old_stub.Unary(harness.request(message="warm"), timeout=TIMEOUT)  # connected channel
    thread, outcome = _in_flight(harness, 5.0)
    waiters, released = _start_waiters(harness.server, 3)
    began = time.monotonic()
    harness.server.stop(2)
    assert time.monotonic() - began < 0.05  # returns at once
    assert _connect_refused(harness.port)  # listeners closed before stop() returned
    for stub in (old_stub, harness.stub()):  # old and new channels
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Unary(harness.request(message="new"), timeout=TIMEOUT)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - t0 < 0.1
    thread.join(TIMEOUT)
    code, at = outcome[0]
    assert code is grpc.StatusCode.UNAVAILABLE
    assert 2.0 <= at - began <= 2.1
    for waiter in waiters:
        waiter.join(1)
    assert all(value is False and at - began <= 2.1 for value, at in released)


def test_termination_follows_the_last_rpc_not_the_grace(harness: Harness) -> None:
    harness.server.start()
    thread, outcome = _in_flight(harness, 0.8)  # ends ~0.5 s after stop()
    waiters, released = _start_waiters(harness.server, 3)
    harness.server.stop(3)
    thread.join(TIMEOUT)
    for waiter in waiters:
        waiter.join(2)
    code, ended = outcome[0]
    assert code == "OK"
    assert all(at - ended < 0.05 for _, at in released)


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [(10, 1, 1.5), (1, 10, 1.0), (5, None, 0.5)],
)
def test_most_restrictive_grace_wins(harness: Harness, first: float, second: Optional[float], expected: float) -> None:
    harness.server.start()
    thread, outcome = _in_flight(harness, 8.0)
    began = time.monotonic()
    event_one = harness.server.stop(first)
    time.sleep(0.5)
    event_two = harness.server.stop(second)
    assert event_one is not event_two
    assert event_two.wait(TIMEOUT) and event_one.is_set()
    elapsed = time.monotonic() - began
    assert expected <= elapsed <= expected + 0.1
    thread.join(TIMEOUT)
    assert outcome[0][0] is grpc.StatusCode.UNAVAILABLE


def test_stop_none_returns_terminated(harness: Harness) -> None:
    harness.server.start()
    _in_flight(harness, 5.0)
    began = time.monotonic()
    assert harness.server.stop(None).is_set()
    assert time.monotonic() - began < 0.1


def test_stop_zero_does_not_block(harness: Harness) -> None:
    harness.server.start()
    _in_flight(harness, 5.0)
    began = time.monotonic()
    event = harness.server.stop(0)
    assert time.monotonic() - began < 0.05
    assert event.wait(1)


def test_cancelled_handlers_see_inactive_and_callbacks_run(harness: Harness) -> None:
    seen: List[str] = []
    done = threading.Event()

    def handler(request: bytes, context: Any) -> bytes:
        context.add_callback(lambda: (seen.append("callback"), done.set()))
        while context.is_active():
            time.sleep(0.01)
        seen.append("inactive")
        return b""

    harness.server.add_generic_rpc_handlers(
        (puregrpc.method_handlers_generic_handler("t.S", {"M": puregrpc.unary_unary_rpc_method_handler(handler)}),)
    )
    harness.server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{harness.port}")
    harness.channels.append(channel)
    future = channel.unary_unary("/t.S/M").future(b"", timeout=TIMEOUT)
    time.sleep(0.2)
    harness.server.stop(0.2)
    assert done.wait(2)
    with pytest.raises(grpc.RpcError) as info:
        future.result()
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE
    time.sleep(0.1)
    assert sorted(seen) == ["callback", "inactive"]


def test_stop_from_inside_a_handler(harness: Harness) -> None:
    def handler(request: bytes, context: Any) -> bytes:
        harness.server.stop(1)  # must not deadlock
        return b"stopped"

    harness.server.add_generic_rpc_handlers(
        (puregrpc.method_handlers_generic_handler("t.S", {"Stop": puregrpc.unary_unary_rpc_method_handler(handler)}),)
    )
    harness.server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{harness.port}")
    harness.channels.append(channel)
    assert channel.unary_unary("/t.S/Stop")(b"", timeout=TIMEOUT) == b"stopped"
    assert harness.server.wait_for_termination(1) is False


def test_stop_before_start_and_after_termination(harness: Harness) -> None:
    assert harness.server.stop(5).is_set()
    harness.server.start()  # still startable: stop before start changes nothing
    harness.server.stop(None)
    assert harness.server.stop(5).is_set()


def test_stop_from_many_threads_at_once(harness: Harness) -> None:
    harness.server.start()
    events: List[threading.Event] = []
    barrier = threading.Barrier(20)

    def stop(grace: Optional[float]) -> None:
        barrier.wait()
        events.append(harness.server.stop(grace))

    threads = [threading.Thread(target=stop, args=(g,)) for g in [None, 0, 1, 5] * 5]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(2)
    assert len(events) == 20 and len({id(e) for e in events}) == 20
    assert all(e.wait(1) for e in events)


# --- two-step GOAWAY on the wire (13) ---------------------------------------------


def _read_frames(sock: socket.socket, until: Callable[[List[Tuple[int, bytes]]], bool]) -> List[Tuple[int, bytes]]:
    """Raw frames (type, payload) until ``until(frames)`` or EOF."""
    frames: List[Tuple[int, bytes]] = []
    buffer = b""
    sock.settimeout(2)
    while not until(frames):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
        while len(buffer) >= 9:
            length = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + length:
                break
            frames.append((buffer[3], buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
    return frames


def test_two_step_goaway_seen_by_a_raw_client(harness: Harness) -> None:
    harness.server.start()
    sock = socket.create_connection(("127.0.0.1", harness.port))
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    sid = client.get_next_available_stream_id()
    client.send_headers(
        sid,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/puregrpc.test.EchoService/Unary"),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    body = harness.request(message="x", sleep=1.0).SerializeToString()
    client.send_data(sid, b"\0" + struct.pack(">I", len(body)) + body, end_stream=True)
    sock.sendall(client.data_to_send())
    time.sleep(0.2)  # handler running
    _read_frames(sock, lambda frames: any(t == 4 for t, _ in frames))  # server SETTINGS
    began = time.monotonic()
    harness.server.stop(5)
    goaways: List[Tuple[float, int]] = []

    def first_goaway_and_ping(frames: List[Tuple[int, bytes]]) -> bool:
        found = [p for t, p in frames if t == 7]
        for payload in found[len(goaways) :]:
            goaways.append((time.monotonic() - began, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF))
        return bool(goaways) and any(t == 6 for t, _ in frames)

    frames = _read_frames(sock, first_goaway_and_ping)
    assert goaways[0][1] == 2**31 - 1
    assert goaways[0][0] < 0.01
    ping = next(p for t, p in frames if t == 6)
    sock.sendall(b"\0\0\x08\x06\x01\0\0\0\0" + ping)  # PING ack
    rest = _read_frames(sock, lambda fs: sum(1 for t, _ in fs if t == 7) >= 1)
    final = [int.from_bytes(p[:4], "big") & 0x7FFFFFFF for t, p in rest if t == 7]
    assert final == [sid]
    sock.close()


# --- garbage collection (19) --------------------------------------------------------


def test_dropping_the_last_reference_refuses_new_connections(echo_pb: Tuple[Any, Any]) -> None:
    h = Harness(echo_pb)
    h.server.start()
    port = h.port
    threads_before = {t.name for t in threading.enumerate()}
    began = time.monotonic()
    h.server = None  # type: ignore[assignment]  # reference counting frees it at once
    while not _connect_refused(port) and time.monotonic() - began < 1:
        time.sleep(0.005)
    elapsed = time.monotonic() - began
    print(f"\nGC to refused connection: {elapsed * 1000:.1f} ms")
    assert elapsed < 0.1
    assert {t.name for t in threading.enumerate()} <= threads_before | {"puregrpc-callbacks"}
    h.pool.shutdown(wait=False)


def test_explicit_del_releases_waiters(harness: Harness) -> None:
    harness.server.start()
    threads, results = _start_waiters(harness.server, 5)
    began = time.monotonic()
    harness.server.__del__()
    for thread in threads:
        thread.join(1)
    assert len(results) == 5 and all(value is False and at - began < 0.1 for value, at in results)
