"""puregrpc replicas behind a real nginx (``grpc_pass``, ``nginx.conf``).

Unary, server-streaming and client-streaming calls, and status codes and details, pass
through nginx unchanged; a replica's drain (a real SIGTERM, with a drain delay) while
grpcio's client calls through nginx. Skipped only where no nginx binary is installed
(``apt-get install nginx-light``, as CI does).
"""

from __future__ import annotations

import pathlib
import signal
import time
from typing import Iterator, List, Tuple

import grpc
import pytest

from ._lb import Load, Process, Replica, free_port, summary
from ._nginx import Nginx, nginx_binary

NGINX = nginx_binary()
pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="no nginx binary: apt-get install nginx-light"),
    pytest.mark.timeout(90),
]

DRAIN_DELAY = 1.5


class Stack:
    """Replicas and nginx in front of them; everything closed at the end."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.processes: List[Process] = []
        self.channels: List[grpc.Channel] = []

    def replica(self, name: str, drain_delay: float = DRAIN_DELAY) -> Replica:
        replica = Replica(name, free_port(), drain_delay=drain_delay, grace=5.0)
        self.processes.append(replica)
        return replica

    def nginx(self, replicas: List[Replica], keepalive: int = 0) -> Nginx:
        assert NGINX is not None
        nginx = Nginx(NGINX, self.workdir, [r.port for r in replicas], keepalive=keepalive)
        self.processes.append(nginx)
        return nginx

    def channel(self, port: int) -> grpc.Channel:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.channels.append(channel)
        return channel

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        for process in reversed(self.processes):
            process.close()


@pytest.fixture()
def stack(tmp_path: pathlib.Path) -> Iterator[Stack]:
    made = Stack(tmp_path)
    try:
        yield made
    finally:
        made.close()


def test_calls_and_statuses_pass_through(stack: Stack) -> None:
    replica = stack.replica("a")
    nginx = stack.nginx([replica], keepalive=4)
    channel = stack.channel(nginx.port)

    whoami = channel.unary_unary("/lb.Replica/Whoami")
    assert whoami(b"", timeout=10) == b"a"

    count = channel.unary_stream("/lb.Replica/Count")
    assert list(count(b"200", timeout=10)) == [f"a:{i}".encode() for i in range(200)]

    total = channel.stream_unary("/lb.Replica/Sum")
    assert total(iter([str(i).encode() for i in range(1, 501)]), timeout=10) == b"125250"

    # large messages each way: flow control through nginx's buffers (beyond any window)
    big = bytes(range(256)) * 8192  # 2 MiB
    assert channel.unary_unary("/lb.Replica/Echo")(big, timeout=20) == big
    # a client stream of 3 MiB: one request body for nginx (client_max_body_size 0)
    size = channel.stream_unary("/lb.Replica/Size")
    assert size(iter([big[: 1 << 20]] * 3), timeout=20) == str(3 << 20).encode()

    fail = channel.unary_unary("/lb.Replica/Fail")
    with pytest.raises(grpc.RpcError) as caught:
        fail(b"NOT_FOUND no such thing: caf\xc3\xa9 100%", timeout=10)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "no such thing: café 100%"

    with pytest.raises(grpc.RpcError) as caught:
        fail(b"PERMISSION_DENIED go away", timeout=10)
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.details() == "go away"

    # an error after some messages: the messages, then the status, in the trailers
    fail_after = channel.unary_stream("/lb.Replica/FailAfter")
    call = fail_after(b"3 RESOURCE_EXHAUSTED out of tokens", timeout=10)
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in call:
            received.append(message)
    assert received == [b"a:0", b"a:1", b"a:2"]
    assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "out of tokens"

    # an unknown method: puregrpc's UNIMPLEMENTED, not an nginx error page
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/lb.Replica/Nope")(b"", timeout=10)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED

    # a deadline: grpc-timeout passes through, the replica's DEADLINE_EXCEEDED or the client's
    with pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary("/lb.Replica/Slow")(b"2", timeout=0.5)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED

    statuses = [line.split()[1] for line in nginx.access_log()]
    # gRPC errors are HTTP 200 + grpc-status; 499 ("client closed") only for the deadline
    # call, when the client's own deadline ended it before the replica's status arrived
    assert statuses.count("200") >= len(statuses) - 1 and set(statuses) <= {"200", "499"}, statuses


# nginx's answer when a replica's final GOAWAY names the request's stream as never processed
# and nginx may not send it elsewhere: HTTP 502, which grpcio reports as UNAVAILABLE
BAD_GATEWAY = "Received http2 header with status: 502"
# nginx's answer when the upstream connection closed under a request it was proxying
CUT_OFF = "Received RST_STREAM with error code 2"


def drain_a_under_load(stack: Stack) -> Tuple[Load, Nginx, float, float]:
    """Replicas a and b behind nginx (keepalive connections), load through nginx, SIGTERM to a;
    return the load, nginx, when SIGTERM was sent and when a exited."""
    a, b = stack.replica("a"), stack.replica("b")
    nginx = stack.nginx([a, b], keepalive=8)
    with Load(stack.channel(nginx.port), threads=2) as load:
        load.wait_for(["a", "b"], timeout=15)
        time.sleep(1.0)
        sent = a.signal(signal.SIGTERM)
        a.expect("DRAINING", timeout=10)
        assert a.wait_exit(timeout=DRAIN_DELAY + 15) == 0, a.describe()
        exited = a.exit_time
        time.sleep(1.0)
    return load, nginx, sent, exited


def figures(load: Load, nginx: Nginx, sent: float, exited: float) -> str:
    failed = load.failures()
    errors = [line.split(": ", 1)[-1].split(",")[0] for line in nginx.stderr_lines if "[error]" in line]
    return (
        f"{len(load.snapshot())} RPCs through nginx, {len(failed)} failed {failed[:3]}; before SIGTERM to a:"
        f" {summary(load.by_replica(0, sent))}; during a's drain delay:"
        f" {summary(load.by_replica(sent, sent + DRAIN_DELAY))}; after a exited: {summary(load.by_replica(exited))};"
        f" nginx errors: {errors}"
    )


def test_drain_of_one_of_two_replicas(stack: Stack) -> None:
    """nginx has no health checks: it sends RPCs to a for as long as a serves (its drain
    delay), then gets connection refused and tries b (grpc_next_upstream error), so RPCs
    keep succeeding. What is not guaranteed: a request nginx sends on a kept-alive (or
    just opened) connection at the moment a's final GOAWAY passes it fails with HTTP 502
    (UNAVAILABLE). nginx knows from the GOAWAY that it was never processed, but never
    resends a gRPC request it has begun to send. The same race at the replica's exit can
    also reach nginx as an upstream connection closed early ("upstream prematurely closed
    connection"), which nginx answers with RST_STREAM INTERNAL_ERROR (grpcio: INTERNAL);
    its cause is not pinned down (see docs/load-balancers.md). Only such failures, only
    then, and few."""
    load, nginx, sent, exited = drain_a_under_load(stack)
    print("\n" + figures(load, nginx, sent, exited))
    failed = load.failures()
    for outcome in failed:
        bad_gateway = outcome.code is grpc.StatusCode.UNAVAILABLE and outcome.details == BAD_GATEWAY
        cut_off = outcome.code is grpc.StatusCode.INTERNAL and CUT_OFF in (outcome.details or "")
        assert bad_gateway or cut_off, outcome
        # the GOAWAY goes out when the drain delay ends; a exits as soon as its RPCs are done
        assert sent + DRAIN_DELAY - 0.1 <= outcome.ended <= exited + 0.5, (outcome, sent, exited)
    assert len(failed) <= 2, figures(load, nginx, sent, exited)
    # Once in CI (in about 25 local runs, never) nginx logged "recv() failed (104: Connection
    # reset by peer) while reading response header from upstream" for the one 502 instead:
    # a TCP reset from a as it exited. The likely cause is fixed (a exited before serving
    # the connections it took from its accept queue at the drain: tests/integration/
    # test_drain_accept_queue.py); still allowed, as the one tolerated 502, in case another
    # path does the same.
    known = ("upstream sent goaway", "prematurely closed", "(104: Connection reset by peer) while reading response")
    explained = [line for line in nginx.stderr_lines if any(k in line for k in known)]
    assert len(explained) >= len(failed), nginx.stderr_lines
    during = load.by_replica(sent, sent + DRAIN_DELAY - 0.2)
    assert during["a"] >= 10, f"a stopped serving before its drain delay ended: {during}"
    after = load.by_replica(exited)
    assert set(after) == {"b"} and after["b"] >= 10, after


def test_drain_of_the_only_replica(stack: Stack) -> None:
    """One replica: calls through nginx succeed during the drain delay, an RPC running at the
    GOAWAY finishes, and once the replica is gone nginx answers 502 (UNAVAILABLE)."""
    a = stack.replica("a")
    nginx = stack.nginx([a], keepalive=8)
    channel = stack.channel(nginx.port)
    whoami = channel.unary_unary("/lb.Replica/Whoami")
    slow = channel.unary_unary("/lb.Replica/Slow")
    assert whoami(b"", timeout=10) == b"a"
    sent = a.signal(signal.SIGTERM)
    a.expect("DRAINING", timeout=10)
    running = slow.future(b"2.0", timeout=15)  # still running when the GOAWAY goes out
    time.sleep(0.2)
    served = 0
    while time.monotonic() < sent + DRAIN_DELAY - 0.3:
        assert whoami(b"", timeout=10) == b"a"
        served += 1
    assert running.result(timeout=15) == b"a"
    finished = time.monotonic()
    assert finished > sent + DRAIN_DELAY, "the slow RPC ended before the GOAWAY: nothing was shown"
    assert a.wait_exit(timeout=10) == 0, a.describe()
    with pytest.raises(grpc.RpcError) as caught:
        whoami(b"", timeout=10)
    print(
        f"\n{served} RPCs served during the drain delay; a 2 s RPC started then finished"
        f" {finished - sent - DRAIN_DELAY:.2f}s after the GOAWAY; after the replica exited:"
        f" {caught.value.code().name} {caught.value.details()!r}"
    )
    assert served >= 10
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == BAD_GATEWAY
