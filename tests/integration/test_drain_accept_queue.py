"""Connections still in the accept queue when a drain begins get GOAWAY, not a reset.

Linux resets the connections queued on a listening socket when it closes (an
SO_REUSEPORT group hands them to its other listeners only with
``net.ipv4.tcp_migrate_req``). In a rolling restart that failed a client's reconnect
with UNAVAILABLE ("Connection reset by peer"), the one failure seen in
tests/lifecycle/test_workers.py. The drain now takes them first
(``ServerCore._adopt_queued_connections``).

To fill the queue, the test holds the server's I/O loop in a sleep while clients
connect (the kernel completes their handshakes), and asks for the stop during that
sleep, so that the drain runs before the loop could accept them.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import List

import grpc
import pytest

from ._support import CLIENT_PREFACE, TIMEOUT, Running, raw_request, read_frames, serve

SERVICE = "drain.Probe"
SETTINGS_ACK = bytes.fromhex("000000040100000000")


def _handlers() -> List[grpc.GenericRpcHandler]:
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    return [grpc.method_handlers_generic_handler(SERVICE, {"Echo": echo})]


def _queue_connections_then_stop(running: Running, count: int) -> List[socket.socket]:
    """Hold the server's I/O loop in a sleep while ``count`` clients connect and send the
    preface (the kernel queues them), and ask for the stop during that sleep, so that the
    drain runs before the loop could accept them; the clients' sockets."""
    core = running.server._core
    # Warm the loop so that the sleep below is the next thing it runs.
    with running.channel() as ch:
        assert ch.unary_unary(f"/{SERVICE}/Echo")(b"x", timeout=TIMEOUT) == b"x"
    entered = threading.Event()

    def hold_loop() -> None:
        entered.set()
        time.sleep(1.0)

    holder = threading.Thread(target=lambda: core.io.call(hold_loop, timeout=TIMEOUT))
    holder.start()
    assert entered.wait(TIMEOUT)
    queued = []
    for _ in range(count):
        sock = socket.create_connection(("localhost", running.port), timeout=TIMEOUT)
        sock.sendall(CLIENT_PREFACE)
        queued.append(sock)
    stopper = threading.Thread(target=lambda: running.server.stop(5))
    stopper.start()
    time.sleep(0.2)  # the stop is posted to the loop, behind the sleep
    holder.join(TIMEOUT)
    stopper.join(TIMEOUT)
    return queued


def test_connections_queued_at_drain_get_goaway_not_a_reset() -> None:
    with serve(handlers=_handlers()) as running:
        queued = _queue_connections_then_stop(running, 5)
        try:
            for sock in queued:
                # A reset would raise ConnectionResetError here. On a connection that has
                # opened no stream the GOAWAY comes after _SETUP_WAIT
                # (test_goaway_waits_for_a_connections_first_stream).
                frames = read_frames(sock, lambda frames: any(f[0] == 0x4 and not f[1] & 0x1 for f in frames))
                assert any(f[0] == 0x4 for f in frames), frames
                sock.sendall(SETTINGS_ACK)
                frames += read_frames(sock, lambda frames: any(f[0] == 0x7 for f in frames))
                goaways = [f for f in frames if f[0] == 0x7]
                assert goaways, frames
                assert int.from_bytes(goaways[0][3][4:8], "big") == 0  # NO_ERROR: reconnect elsewhere
        finally:
            for sock in queued:
                sock.close()


def _connect_and_read_settings(port: int) -> socket.socket:
    sock = socket.create_connection(("localhost", port), timeout=TIMEOUT)
    sock.sendall(CLIENT_PREFACE)
    frames = read_frames(sock, lambda frames: any(f[0] == 0x4 and not f[1] & 0x1 for f in frames))
    assert any(f[0] == 0x4 for f in frames), frames  # connection_made has run: it is the server's
    return sock


@pytest.mark.parametrize("ack", [True, False], ids=["settings acknowledged", "settings not acknowledged"])
def test_goaway_waits_for_a_connections_first_stream(ack: bool) -> None:
    """A drain's GOAWAY reaching a connection that grpcio's client is still setting up
    can hang the client's first call until its deadline, even just after the client
    acknowledged our SETTINGS: seen in rolling restarts, where new connections reach a
    worker as it drains. So on a connection that has opened no stream the GOAWAY waits
    for the first one (next test), and at most _SETUP_WAIT."""
    from puregrpc._connection import _SETUP_WAIT

    with serve(handlers=_handlers()) as running:
        sock = _connect_and_read_settings(running.port)
        try:
            if ack:
                sock.sendall(SETTINGS_ACK)
            stopped = time.monotonic()
            assert running.server.stop(5).wait(TIMEOUT)  # no RPC running: terminated at once
            early = read_frames(sock, lambda frames: False, timeout=_SETUP_WAIT / 2)
            assert not [f for f in early if f[0] == 0x7], early  # no GOAWAY yet, not closed
            frames = read_frames(sock, lambda frames: any(f[0] == 0x7 for f in frames))
            took = time.monotonic() - stopped
            goaways = [f for f in frames if f[0] == 0x7]
            assert goaways, frames
            assert int.from_bytes(goaways[-1][3][:4], "big") == 0  # no stream was processed
            assert int.from_bytes(goaways[-1][3][4:8], "big") == 0  # NO_ERROR
            assert _SETUP_WAIT * 0.9 <= took < _SETUP_WAIT + 1.0, took
            closing = time.monotonic()
            rest = read_frames(sock, lambda frames: False, timeout=3.0)  # until the server's FIN
            assert time.monotonic() - closing < 2.5, "the connection was not closed"
            assert not [f for f in rest if f[0] not in (0x4, 0x6, 0x7)], rest
        finally:
            sock.close()


@pytest.mark.parametrize("ack", [True, False], ids=["settings acknowledged", "settings not acknowledged"])
def test_the_first_stream_ends_the_wait_and_is_refused(ack: bool) -> None:
    """The connection's first stream ends the wait: the GOAWAY goes out at once, naming no
    stream (nothing was processed), then RST_STREAM REFUSED_STREAM for the stream
    (lifecycle.md 12), so the client retries it on another connection."""
    with serve(handlers=_handlers()) as running:
        sock = _connect_and_read_settings(running.port)
        try:
            assert running.server.stop(5).wait(TIMEOUT)
            sock.sendall((SETTINGS_ACK if ack else b"") + raw_request(1, f"/{SERVICE}/Echo", b"x"))
            sent = time.monotonic()
            frames = read_frames(sock, lambda frames: any(f[0] == 0x3 for f in frames), 3.0)
            took = time.monotonic() - sent
            kinds = [f[0] for f in frames if f[0] in (0x1, 0x3, 0x7)]
            assert kinds and kinds[-1] == 0x3 and 0x7 in kinds and 0x1 not in kinds, frames  # GOAWAYs, RST
            goaways = [f for f in frames if f[0] == 0x7]
            assert int.from_bytes(goaways[-1][3][:4], "big") == 0, goaways  # no stream processed
            reset = next(f for f in frames if f[0] == 0x3)
            assert reset[2] == 1 and int.from_bytes(reset[3], "big") == 0x7, reset  # REFUSED_STREAM
            assert took < 0.4, took  # at once, not on the timer
            assert running.server.stats().streams_refused == 1
        finally:
            sock.close()


def test_connections_accepted_as_the_drain_begins_are_served_their_goaway() -> None:
    """The loop accepts queued connections and, before their transports are made (asyncio
    makes each in a task of its own), the drain begins. Closing the listener then would
    make asyncio drop them (an assertion in Server._attach, swallowed), each socket left
    open for the garbage collector: the client got nothing until the process exited, in a
    rolling restart a call hung until its deadline. The drain closes the listener one
    loop turn later, so each gets SETTINGS and the drain's GOAWAY."""
    with serve(handlers=_handlers()) as running:
        loop = running.server._core.io.loop
        entered = threading.Event()

        def hold_then_stop_after_the_accept() -> None:
            entered.set()
            time.sleep(0.5)  # the clients connect meanwhile: the kernel queues them
            # Next turn: the accept (the listener is readable), then this, which asks for
            # the stop right after it, before the accepted connections' tasks have run.
            loop.call_soon(lambda: loop.call_soon(lambda: running.server.stop(5)))

        holder = threading.Thread(target=lambda: running.server._core.io.call(hold_then_stop_after_the_accept))
        holder.start()
        assert entered.wait(TIMEOUT)
        queued = []
        try:
            for _ in range(5):
                sock = socket.create_connection(("localhost", running.port), timeout=TIMEOUT)
                sock.sendall(CLIENT_PREFACE)
                queued.append(sock)
            holder.join(TIMEOUT)
            assert not running.server.wait_for_termination(TIMEOUT)  # False: terminated
            for sock in queued:
                frames = read_frames(sock, lambda frames: any(f[0] == 0x4 and not f[1] & 0x1 for f in frames), 3.0)
                assert any(f[0] == 0x4 for f in frames), f"no SETTINGS: the connection was dropped ({frames})"
                sock.sendall(SETTINGS_ACK)
                frames += read_frames(sock, lambda frames: any(f[0] == 0x7 for f in frames), 3.0)
                assert [f for f in frames if f[0] == 0x7], frames
        finally:
            for sock in queued:
                sock.close()


def test_a_process_exit_waits_for_the_connections_taken_from_the_queue() -> None:
    """``sockets_closed`` (puregrpc.run waits on it before the process exits) counts the
    connections taken from the accept queue at the drain, before they are Connections:
    set at termination, the process exited under them and the kernel reset them (nginx,
    tests/lb: "Connection reset by peer while reading response header from upstream")."""
    with serve(handlers=_handlers()) as running:
        core = running.server._core
        queued = _queue_connections_then_stop(running, 3)
        try:
            assert not running.server.wait_for_termination(TIMEOUT)  # no RPC: terminated at once
            time.sleep(0.1)  # the adopted connections are Connections by now, or would be lost
            assert not core.sockets_closed.is_set(), "a process would exit under the queued connections"
            for sock in queued:
                frames = read_frames(sock, lambda frames: any(f[0] == 0x4 and not f[1] & 0x1 for f in frames), 3.0)
                assert any(f[0] == 0x4 for f in frames), frames  # served, not dropped
        finally:
            for sock in queued:
                sock.close()
        assert core.sockets_closed.wait(5.0), "set once every connection has closed"
