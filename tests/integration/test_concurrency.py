"""Many streams, many connections, and flow control with slow peers."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, List, Set

import grpc
import pytest
from h2.settings import SettingCodes

from ._support import (
    TIMEOUT,
    RawClient,
    Recorder,
    Running,
    grpc_frame,
    grpc_messages,
    grpc_request,
    serve,
    wait_for,
)

SERVICE = "load.Probe"
KiB = 1024
MAX_FRAME_SIZE = SettingCodes.MAX_FRAME_SIZE
INITIAL_WINDOW_SIZE = SettingCodes.INITIAL_WINDOW_SIZE


def test_500_concurrent_streams_on_one_channel() -> None:
    """500 handlers are inside at the same time: all 500 streams are open at once."""
    barrier = threading.Barrier(500, timeout=TIMEOUT)

    def meet(request: bytes, context: Any) -> bytes:
        barrier.wait()
        return request

    generic = grpc.method_handlers_generic_handler(SERVICE, {"Meet": grpc.unary_unary_rpc_method_handler(meet)})
    with serve(handlers=[generic], workers=520) as running, running.channel() as ch:
        method = ch.unary_unary(f"/{SERVICE}/Meet")
        futures = [method.future(b"%d" % i, timeout=TIMEOUT) for i in range(500)]
        results = [f.result(timeout=TIMEOUT) for f in futures]
    assert results == [b"%d" % i for i in range(500)]
    assert not barrier.broken


def test_20_channels_x_50_calls() -> None:
    peers: Set[str] = set()
    lock = threading.Lock()

    def echo(request: bytes, context: Any) -> bytes:
        with lock:
            peers.add(context.peer())
        return request

    generic = grpc.method_handlers_generic_handler(SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
    with serve(handlers=[generic], workers=32) as running:

        def client(index: int) -> List[bytes]:
            # A local subchannel pool: one TCP connection per channel.
            options = [("grpc.use_local_subchannel_pool", 1)]
            with running.channel(options=options) as ch:
                method = ch.unary_unary(f"/{SERVICE}/Echo")
                futures = [method.future(b"%d-%d" % (index, i), timeout=TIMEOUT) for i in range(25)]
                answers = [f.result(timeout=TIMEOUT) for f in futures]
                answers += [method(b"%d-%d" % (index, i), timeout=TIMEOUT) for i in range(25, 50)]
                return answers

        with ThreadPoolExecutor(max_workers=20) as clients:
            results = list(clients.map(client, range(20), timeout=30))
    for index, answers in enumerate(results):
        assert answers == [b"%d-%d" % (index, i) for i in range(50)]
    assert len(peers) == 20


class Counters:
    def __init__(self) -> None:
        self.produced = 0
        self.consumed = 0
        self.max_gap = 0
        self.lock = threading.Lock()


def _producer(count: int, size: int, counters: Counters) -> grpc.GenericRpcHandler:
    """Produce: ``count`` messages of ``size`` bytes (its index, then a fill byte),
    each counted in ``counters.produced`` as the handler makes it."""

    def produce(request: bytes, context: Any) -> Iterator[bytes]:
        for index in range(count):
            with counters.lock:
                counters.produced += 1
            yield index.to_bytes(4, "big") + bytes([index % 251]) * (size - 4)

    return grpc.method_handlers_generic_handler(SERVICE, {"Produce": grpc.unary_stream_rpc_method_handler(produce)})


def _check_produced(messages: List[bytes], count: int, size: int) -> None:
    assert len(messages) == count
    for index, message in enumerate(messages):
        assert len(message) == size
        assert int.from_bytes(message[:4], "big") == index
        assert message[4:] == bytes([index % 251]) * (size - 4)


def test_server_streaming_with_slow_reader_is_intact_and_bounded() -> None:
    count, size = 200, 64 * KiB
    counters = Counters()

    generic = _producer(count, size, counters)
    # Without BDP probing grpcio's client keeps its receive window small, so a
    # stalled reader soon stalls the server (with it, the window may grow to 8 MiB+).
    options = [("grpc.http2.bdp_probe", 0)]
    with serve(handlers=[generic]) as running, running.channel(options=options) as ch:
        call = ch.unary_stream(f"/{SERVICE}/Produce")(b"", timeout=20)
        received: List[bytes] = []
        for message in call:
            received.append(message)
            if len(received) == 5:
                # The reader stalls: the handler must stall too, well before the end.
                time.sleep(0.5)
                stalled_at = counters.produced
                time.sleep(0.3)
                assert counters.produced == stalled_at, "the handler kept producing"
                # the client's 64 KiB window + its buffers + our bounded queue
                assert stalled_at <= 30, stalled_at
            elif len(received) % 20 == 0:
                time.sleep(0.02)
        assert call.code() is grpc.StatusCode.OK
    _check_produced(received, count, size)


class _ProduceReader:
    """A raw h2 client's Produce call: the request sent, then the response read as
    ``pump`` is called, its DATA gathered in ``body``."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        conn = client.conn
        self.sid = conn.get_next_available_stream_id()
        conn.send_headers(self.sid, grpc_request(f"/{SERVICE}/Produce"))
        conn.send_data(self.sid, grpc_frame(b""), end_stream=True)
        client.sock.sendall(conn.data_to_send())
        self.body = bytearray()
        self.unacked = 0
        self.ended = False

    def pump(self, ack: bool) -> None:
        """One read; with ``ack``, give back the window the DATA read so far took."""
        conn = self.client.conn
        data = self.client.sock.recv(1 << 20)
        assert data, "connection closed"
        for event in conn.receive_data(data):
            kind = type(event).__name__
            if kind == "DataReceived":
                self.body.extend(event.data)
                self.unacked += event.flow_controlled_length
            elif kind == "StreamEnded":
                self.ended = True
        if ack:
            self.acknowledge()
        self.client.sock.sendall(conn.data_to_send())

    def acknowledge(self) -> None:
        """Give back the window the DATA read so far took (queued with the next send)."""
        if self.unacked:
            self.client.conn.acknowledge_received_data(self.unacked, self.sid)
            self.unacked = 0

    def messages(self) -> List[bytes]:
        messages = grpc_messages(bytes(self.body))
        assert not any(compressed for compressed, _ in messages)
        return [message for _, message in messages]


def test_server_buffers_little_when_the_client_grants_no_window() -> None:
    """A raw h2 client that never sends WINDOW_UPDATE: the server can send 64 KiB;
    the handler may run ahead of that only by the server's bounded response queue."""
    count, size = 200, 64 * KiB
    counters = Counters()

    generic = _producer(count, size, counters)
    with serve(handlers=[generic]) as running, RawClient(running.port) as client:
        reader = _ProduceReader(client)
        client.sock.settimeout(0.3)
        try:
            while True:
                reader.pump(ack=False)
        except TimeoutError:
            pass
        assert wait_for(lambda: counters.produced > 0)
        time.sleep(0.3)
        stalled_at = counters.produced
        assert len(reader.body) <= 65_535
        # 64 KiB on the wire + a 256 KiB response queue + one message per layer.
        assert stalled_at <= 8, stalled_at
        client.sock.settimeout(TIMEOUT)
        reader.acknowledge()
        client.sock.sendall(client.conn.data_to_send())
        while not reader.ended:
            reader.pump(ack=True)
    _check_produced(reader.messages(), count, size)


def test_a_client_that_opens_every_window_then_stops_reading_stalls_the_handler() -> None:
    """Every window open (2^31-1, 16 MiB frames: large DATA leaves as views, and from
    Python 3.12 through writelines), then the client stops reading its socket. Only the
    transport's pause can stop the handler: it must stall after a few messages (the
    kernel's socket buffers, the transport's high-water mark, the response queue), not
    put all 64 MiB in memory; then every byte arrives when the client reads again."""
    count, size = 64, 1024 * KiB
    counters = Counters()

    generic = _producer(count, size, counters)
    with serve(handlers=[generic]) as running, RawClient(running.port) as client:
        conn = client.conn
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KiB)
        conn.update_settings({MAX_FRAME_SIZE: (1 << 24) - 1, INITIAL_WINDOW_SIZE: (1 << 31) - 1})
        conn.increment_flow_control_window((1 << 31) - 1 - 65535)
        reader = _ProduceReader(client)  # sends the settings and window above too
        assert wait_for(lambda: counters.produced > 0)
        stalled_at = -1
        for _ in range(50):  # until it stays put for 0.3 s
            stalled_at = counters.produced
            time.sleep(0.3)
            if counters.produced == stalled_at:
                break
        # Kernel buffers on both sides (a few MiB on loopback), the transport's 64 KiB
        # high-water mark, the 256 KiB response queue, one message per layer.
        print(f"stalled at {stalled_at} MiB")
        assert stalled_at <= 24, f"the handler produced {stalled_at} of {count} MiB unread"
        while not reader.ended:
            reader.pump(ack=True)
    _check_produced(reader.messages(), count, size)


def test_client_streaming_to_a_slow_handler() -> None:
    count, size = 120, 200 * KiB
    counters = Counters()

    def consume(requests: Iterator[bytes], context: Any) -> bytes:
        total = 0
        for index, request in enumerate(requests):
            assert len(request) == size and request[0] == index % 251
            with counters.lock:
                counters.consumed += 1
                counters.max_gap = max(counters.max_gap, counters.produced - counters.consumed)
            total += len(request)
            if index < 10:
                time.sleep(0.05)
        return str(total).encode()

    generic = grpc.method_handlers_generic_handler(SERVICE, {"Consume": grpc.stream_unary_rpc_method_handler(consume)})

    def requests() -> Iterator[bytes]:
        for index in range(count):
            with counters.lock:
                counters.produced += 1
            yield bytes([index % 251]) * size

    with serve(handlers=[generic]) as running, running.channel() as ch:
        result = ch.stream_unary(f"/{SERVICE}/Consume")(requests(), timeout=20)
    assert result == str(count * size).encode()
    assert counters.consumed == count
    # While the handler was slow the client could not run far ahead of it.
    assert counters.max_gap <= 30, counters.max_gap


def test_bidi_ping_pong_many_rounds(echo_server: Running, pb: Any, pb_grpc: Any) -> None:
    """Strict alternation: each request is sent only after the previous answer."""
    answers: List[Any] = []
    ready = threading.Semaphore(1)

    def requests() -> Iterator[Any]:
        for index in range(200):
            assert ready.acquire(timeout=TIMEOUT)
            yield pb.EchoRequest(message=str(index))

    with echo_server.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        for answer in stub.BidiStream(requests(), timeout=TIMEOUT):
            answers.append(answer)
            ready.release()
    assert [a.message for a in answers] == [str(i) for i in range(200)]


@pytest.mark.parametrize("kind", ["unary", "stream"])
def test_many_calls_while_others_stream(kind: str, echo_server: Running, pb: Any, pb_grpc: Any) -> None:
    """Short calls keep flowing while long streams share the connection."""
    with echo_server.channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        streams = [
            stub.ServerStream(pb.EchoRequest(count=50, payload=b"p" * 30_000), timeout=TIMEOUT) for _ in range(5)
        ]
        for index in range(100):
            if kind == "unary":
                assert stub.Unary(pb.EchoRequest(message=str(index)), timeout=TIMEOUT).message == str(index)
            else:
                replies = list(stub.ServerStream(pb.EchoRequest(count=2), timeout=TIMEOUT))
                assert len(replies) == 2
        for stream in streams:
            assert sum(1 for _ in stream) == 50
        assert wait_for(lambda: all(s.code() is grpc.StatusCode.OK for s in streams))


def test_client_cancels_while_the_handler_is_blocked_writing() -> None:
    events = Recorder()
    counters = Counters()

    def produce(request: bytes, context: Any) -> Iterator[bytes]:
        context.add_callback(lambda: events.add("callback"))
        try:
            while True:
                with counters.lock:
                    counters.produced += 1
                yield b"w" * (64 * KiB)
        finally:
            events.add(("closed", context.is_active()))

    generic = grpc.method_handlers_generic_handler(SERVICE, {"Produce": grpc.unary_stream_rpc_method_handler(produce)})
    options = [("grpc.http2.bdp_probe", 0)]
    with serve(handlers=[generic]) as running, running.channel(options=options) as ch:
        call = ch.unary_stream(f"/{SERVICE}/Produce")(b"", timeout=TIMEOUT)
        next(call)
        # Wait until the handler is stuck behind flow control.
        previous = -1
        while previous != counters.produced:
            previous = counters.produced
            time.sleep(0.2)
        call.cancel()
        assert events.wait_for(("closed", False))
        assert events.wait_for("callback")
        assert call.code() is grpc.StatusCode.CANCELLED
        # The server is fine afterwards.
        again = ch.unary_stream(f"/{SERVICE}/Produce")(b"", timeout=TIMEOUT)
        assert len(next(again)) == 64 * KiB
        again.cancel()


@pytest.mark.parametrize("ending", ["half-close", "client-cancel", "deadline"])
def test_a_handler_blocked_reading_is_released_by_each_ending(ending: str) -> None:
    """A sync handler waiting in ``next(requests)`` with nothing queued is let go at
    once by each way its wait can end: the client's half-close (StopIteration), its
    cancel, the deadline (the call has ended: an error)."""
    events = Recorder()
    outcome: List[Any] = []

    def consume(requests: Iterator[bytes], context: Any) -> bytes:
        assert next(requests) == b"first"
        events.add("first")
        try:
            rest = list(requests)  # blocks: the client sends nothing more
        except Exception as exc:
            outcome.append((type(exc).__name__, time.monotonic()))
            raise
        outcome.append(("end", time.monotonic(), rest))
        events.add("returned")
        return b"end"

    generic = grpc.method_handlers_generic_handler(SERVICE, {"Consume": grpc.stream_unary_rpc_method_handler(consume)})
    hold = threading.Event()

    def requests() -> Iterator[bytes]:
        yield b"first"
        if ending == "half-close":
            time.sleep(0.3)  # the handler is parked by now
            return
        hold.wait(TIMEOUT)  # the request stream stays open

    with serve(handlers=[generic]) as running, running.channel() as ch:
        timeout = 1.0 if ending == "deadline" else TIMEOUT
        future = ch.stream_unary(f"/{SERVICE}/Consume").future(requests(), timeout=timeout)
        assert events.wait_for("first")
        if ending == "client-cancel":
            time.sleep(0.3)
            assert future.cancel()
        ended_at = time.monotonic()
        if ending == "half-close":
            assert future.result(timeout=TIMEOUT) == b"end"
        else:
            with pytest.raises(grpc.FutureCancelledError if ending == "client-cancel" else grpc.RpcError):
                future.result(timeout=TIMEOUT)
        assert wait_for(lambda: bool(outcome), timeout=5), f"the handler is still blocked reading ({ending})"
        hold.set()
    if ending == "half-close":
        assert outcome[0][0] == "end" and outcome[0][2] == []
    else:
        assert outcome[0][0] == "RpcError"
        assert outcome[0][1] - ended_at < 2.0


def test_two_threads_reading_one_request_stream_take_each_message_once() -> None:
    """Threads reading one request iterator at once (as grpcio's allows) each get
    distinct messages, in order, and all see its end: none is left waiting."""
    count = 200
    result: List[Any] = []

    def consume(requests: Iterator[bytes], context: Any) -> bytes:
        taken: List[List[int]] = [[], []]

        def read(into: List[int]) -> None:
            for message in requests:
                into.append(int(message))

        readers = [threading.Thread(target=read, args=(into,), daemon=True) for into in taken]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(TIMEOUT)
        result.append(([reader.is_alive() for reader in readers], taken))
        return b"done"

    generic = grpc.method_handlers_generic_handler(SERVICE, {"Consume": grpc.stream_unary_rpc_method_handler(consume)})

    def requests() -> Iterator[bytes]:
        for index in range(count):
            if index % 4 == 0:
                time.sleep(0.002)  # both readers wait now and then
            yield b"%d" % index

    with serve(handlers=[generic]) as running, running.channel() as ch:
        future = ch.stream_unary(f"/{SERVICE}/Consume").future(requests(), timeout=TIMEOUT + 10)
        assert wait_for(lambda: bool(result), timeout=TIMEOUT + 5)
        alive, taken = result[0]
        assert alive == [False, False], "a reader was left waiting after the request stream ended"
        assert future.result(timeout=TIMEOUT) == b"done"
    assert sorted(taken[0] + taken[1]) == list(range(count))
    for into in taken:
        assert into == sorted(into)
