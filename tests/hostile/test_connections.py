"""Hostile connections: slowloris, many idle connections, and clients that die mid-call
thousands of times; the server's handlers, threads, file descriptors and memory are
counted in its own process before and after. The single-connection handshake bounds
are in tests/integration/test_connection_management.py (test_handshake_timeout_*,
test_connections_in_handshake_are_bounded); here they are pushed to hundreds."""

from __future__ import annotations

import selectors
import socket
import struct
import time
from typing import Dict, Iterator, List

import pytest
from integration._support import CLIENT_PREFACE, frame_bytes, grpc_frame, split_frames

from ._hostile import (
    GoodClient,
    KiB,
    MiB,
    Target,
    assert_no_leak,
    connect,
    headers,
    request_block,
    rst,
    settings_frame,
)

HANDSHAKE_TIMEOUT_MS = 2000
MAX_HANDSHAKING = 300


@pytest.fixture()
def strict_target() -> Iterator[Target]:
    """A server with a 2 s handshake timeout and at most 300 connections in handshake."""
    server = Target(
        "--option",
        f"grpc.server_handshake_timeout_ms={HANDSHAKE_TIMEOUT_MS}",
        "--max-handshaking",
        str(MAX_HANDSHAKING),
    )
    yield server
    server.close()


def _wait_closed(socks: List[socket.socket], timeout: float) -> Dict[socket.socket, float]:
    """When each socket was closed by the server (monotonic time), within ``timeout``."""
    closed: Dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        end = time.monotonic() + timeout
        while len(closed) < len(socks) and time.monotonic() < end:
            for key, _ in sel.select(0.1):
                sock = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except (ConnectionResetError, BlockingIOError) as exc:
                    if isinstance(exc, BlockingIOError):
                        continue
                    data = b""
                if not data:
                    closed[sock] = time.monotonic()
                    sel.unregister(sock)
    return closed


def test_500_slowloris_connections_are_closed_by_the_handshake_bounds(strict_target: Target) -> None:
    """500 connections that send half a preface and nothing more. Bounds: at most
    MAX_HANDSHAKING (300 here) in handshake at once, the rest closed at once; each closed
    after grpc.server_handshake_timeout_ms (2 s here)."""
    target = strict_target
    base = target.stats()
    count = 500
    socks: List[socket.socket] = []
    with GoodClient(target) as good:
        try:
            opened = time.monotonic()
            for _ in range(count):
                socks.append(connect(target.port, b"PRI * HTTP/2.0\r\n"))
            closed = _wait_closed(socks, HANDSHAKE_TIMEOUT_MS / 1000 + 10)
        finally:
            for sock in socks:
                sock.close()
    rejected = sum(1 for line in target.log if "still in their handshake" in line)
    early = sum(1 for when in closed.values() if when - opened < HANDSHAKE_TIMEOUT_MS / 1000 * 0.75)
    last = max(closed.values()) - opened if closed else float("nan")
    label = "500 slowloris"
    print(
        f"{label}: {len(closed)}/{count} closed by the server, {rejected} refused at once "
        f"(MAX_HANDSHAKING {MAX_HANDSHAKING}), {early} closed before the timeout, the last after {last:.2f} s "
        f"(timeout {HANDSHAKE_TIMEOUT_MS / 1000:.1f} s)"
    )
    assert len(closed) == count
    assert 0 < rejected <= count - MAX_HANDSHAKING
    assert early <= rejected  # only the refused ones go before the timeout
    assert last < HANDSHAKE_TIMEOUT_MS / 1000 + 5
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def _handshake(socks: List[socket.socket]) -> None:
    """Read each server's SETTINGS and acknowledge it."""
    for sock in socks:
        buffer = b""
        while True:
            frames, buffer = split_frames(buffer + sock.recv(65536))
            if any(kind == 0x4 and not flags & 0x1 for kind, flags, _, _ in frames):
                break
        sock.sendall(settings_frame(ack=True))


def test_1000_idle_connections_cost_little_memory_each(target: Target) -> None:
    """1,000 connections that finish the handshake and then say nothing. Bound: under
    64 KiB of server memory each (nothing closes them by default: grpc.max_connection_idle_ms
    is the option for that); all freed when they close."""
    base = target.stats()
    count = 1000
    socks: List[socket.socket] = []
    with GoodClient(target) as good:
        try:
            # Opened 50 at a time: the cost measured is that of idle connections (a
            # burst of new connections is the slowloris test's subject).
            for _ in range(0, count, 50):
                batch = [connect(target.port, CLIENT_PREFACE) for _ in range(50)]
                socks += batch
                _handshake(batch)
                time.sleep(0.05)
            full = target.settle(lambda s: s["connections"] >= base["connections"] + count)
            time.sleep(0.5)
            full = target.stats()
        finally:
            for sock in socks:
                sock.close()
    per = (full["rss"] - base["rss"]) / count
    label = "1000 idle connections"
    print(
        f"{label}: {full['connections'] - base['connections']} open (the good client's too), server RSS "
        f"{(full['rss'] - base['rss']) / MiB:+.1f} MiB, {per / KiB:.1f} KiB per connection, "
        f"fds {base['fds']}->{full['fds']}"
    )
    assert full["connections"] >= base["connections"] + count
    assert per < 64 * KiB
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def _die(sock: socket.socket, how: str) -> None:
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_clients_that_die_mid_call_leave_nothing_behind(target: Target) -> None:
    """2,000 clients, 40 at a time, each dying in the middle of a call: a streaming
    response under way then RST_STREAM and close, or a TCP reset; a unary call waiting in
    its handler then close; a request message half sent then a TCP reset. Afterwards no
    RPC in flight, no handler running, no extra thread, file descriptor or connection."""
    base = target.stats()
    drip, hold, upload = request_block("Drip"), request_block("Hold"), request_block("Upload")
    waves, per_wave = 50, 40
    started = time.monotonic()
    with GoodClient(target) as good:
        for _ in range(waves):
            socks: List[socket.socket] = []
            for i in range(per_wave):
                mode = i % 4
                if mode in (0, 1):
                    request = headers(1, drip) + frame_bytes(0x0, 0x1, 1, grpc_frame(b""))
                elif mode == 2:
                    request = headers(1, hold) + frame_bytes(0x0, 0x1, 1, grpc_frame(b"30"))
                else:
                    request = headers(1, upload) + frame_bytes(0x0, 0, 1, b"\x00\x00\x01\x00\x00" + b"u" * 1000)
                socks.append(connect(target.port, CLIENT_PREFACE + request))
            # Let the streaming responses begin (those whose handler got a thread).
            waiting = {s for i, s in enumerate(socks) if i % 4 in (0, 1)}
            end = time.monotonic() + 0.1
            with selectors.DefaultSelector() as sel:
                for sock in waiting:
                    sel.register(sock, selectors.EVENT_READ)
                while len(waiting) > per_wave // 4 and time.monotonic() < end:
                    for key, _ in sel.select(0.05):
                        sock = key.fileobj  # type: ignore[assignment]
                        frames, _ = split_frames(sock.recv(65536))
                        if any(kind == 0x0 for kind, _, _, _ in frames):
                            waiting.discard(sock)
                            sel.unregister(sock)
            for i, sock in enumerate(socks):
                mode = i % 4
                if mode == 0:
                    try:
                        sock.sendall(rst(1))
                    except OSError:
                        pass
                _die(sock, "reset" if mode in (1, 3) else "close")
    elapsed = time.monotonic() - started
    after = target.stats()
    label = "2000 clients dying mid-call"
    print(
        f"{label}: {waves * per_wave} clients in {elapsed:.1f} s; "
        f"{after['rpcs_started'] - base['rpcs_started']} RPCs started, "
        f"{after['handlers_total'] - base['handlers_total']} handlers ran"
    )
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)
