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

from ._support import CLIENT_PREFACE, TIMEOUT, read_frames, serve

SERVICE = "drain.Probe"


def _handlers() -> List[grpc.GenericRpcHandler]:
    echo = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    return [grpc.method_handlers_generic_handler(SERVICE, {"Echo": echo})]


def test_connections_queued_at_drain_get_goaway_not_a_reset() -> None:
    with serve(handlers=_handlers()) as running:
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
        for _ in range(5):
            sock = socket.create_connection(("localhost", running.port), timeout=TIMEOUT)
            sock.sendall(CLIENT_PREFACE)
            queued.append(sock)
        stopper = threading.Thread(target=lambda: running.server.stop(5))
        stopper.start()
        time.sleep(0.2)  # the stop is posted to the loop, behind the sleep
        holder.join(TIMEOUT)
        stopper.join(TIMEOUT)
        try:
            for sock in queued:
                # A reset would raise ConnectionResetError here.
                frames = read_frames(sock, lambda frames: any(f[0] == 0x7 for f in frames))
                goaways = [f for f in frames if f[0] == 0x7]
                assert goaways, frames
                assert int.from_bytes(goaways[0][3][4:8], "big") == 0  # NO_ERROR: reconnect elsewhere
        finally:
            for sock in queued:
                sock.close()
