"""Hostile streams: responses held at a zero window, and max-concurrent-streams held open
forever. The in-process versions with the h2 library are in
tests/integration/test_correctness.py (test_unread_responses_are_bounded,
test_unfinished_messages_are_bounded); here the server's memory is its own process's."""

from __future__ import annotations

import socket
import time
from typing import List

from integration._support import CLIENT_PREFACE, frame_bytes, grpc_frame, read_frames

from ._hostile import (
    REFUSED_STREAM,
    GoodClient,
    MiB,
    Target,
    assert_no_leak,
    connect,
    headers,
    request_block,
    settings_frame,
)

MAX_CONCURRENT_STREAMS = 1000  # grpc.max_concurrent_streams' default
OUTPUT_LIMIT = 4 * MiB  # a connection's unsent output, past which its calls wait (README)
MAX_WAITING_FOR_WORKER = 32  # a connection's calls handed to the pool and not yet running


def test_zero_window_streams_asking_for_large_responses_are_bounded(target: Target) -> None:
    """Two connections with SETTINGS_INITIAL_WINDOW_SIZE 0, each asking 200 times for a
    1 MiB response (400 MiB if all were made). Bound: per connection, OUTPUT_LIMIT of
    unsent output plus the answers of the calls handed to the pool before it was passed
    (at most MAX_WAITING_FOR_WORKER waiting + the 16 handler threads); the other calls
    wait, unrun. (Between commits 1a9a440 and 78a05e8, 90 to 330 answers were made.)"""
    base = target.stats()
    block = request_block("Big")
    count, size = 200, MiB
    request = b"".join(
        headers(1 + 2 * i, block) + frame_bytes(0x0, 0x1, 1 + 2 * i, grpc_frame(str(size).encode()))
        for i in range(count)
    )
    peak = base["rss"]
    socks: List[socket.socket] = []
    with GoodClient(target) as good:
        try:
            for _ in range(2):
                sock = connect(target.port, CLIENT_PREFACE + settings_frame((0x4, 0)))
                sock.sendall(request)
                socks.append(sock)
            end = time.monotonic() + 2.5
            while time.monotonic() < end:
                peak = max(peak, target.stats()["rss"])
                time.sleep(0.1)
            during = target.stats()
        finally:
            for sock in socks:
                sock.close()
    grown = peak - base["rss"]
    answers = 2 * (OUTPUT_LIMIT // size + MAX_WAITING_FOR_WORKER + 16)
    bound = answers * size + 16 * MiB
    ran = during["handlers_by_method"].get("big", 0) - base["handlers_by_method"].get("big", 0)
    label = "zero-window large responses"
    print(
        f"{label}: {ran} of {2 * count} handlers ran (bound {answers}), "
        f"server RSS {grown / MiB:+.1f} MiB at most (bound {bound / MiB:.0f} MiB)"
    )
    assert ran <= answers  # the rest wait, unrun
    assert grown < bound
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def _hold_streams(sock: socket.socket, count: int, method: str = "Echo") -> None:
    """Open ``count`` streams with HEADERS only: no message, no END_STREAM."""
    block = request_block(method)
    sock.sendall(b"".join(headers(1 + 2 * i, block) for i in range(count)))


def test_streams_past_max_concurrent_streams_are_refused(target: Target) -> None:
    """1,000 unary streams held open forever (HEADERS, no message), then 100 more: the
    extra ones are refused with RST_STREAM REFUSED_STREAM; when the client goes, every
    held call ends."""
    base = target.stats()
    extra = 100
    with connect(target.port) as sock:
        _hold_streams(sock, MAX_CONCURRENT_STREAMS + extra)

        def refused(frames: List[tuple]) -> int:  # type: ignore[type-arg]
            return sum(1 for kind, _, _, p in frames if kind == 0x3 and int.from_bytes(p, "big") == REFUSED_STREAM)

        frames = read_frames(sock, lambda f: refused(f) >= extra, timeout=10)
        held = target.settle(lambda s: s["rpcs_in_flight"] >= MAX_CONCURRENT_STREAMS)
    label = "max concurrent streams"
    print(f"{label}: {held['rpcs_in_flight']} calls held, {refused(frames)} streams refused")
    assert refused(frames) == extra
    assert held["streams_refused"] - base["streams_refused"] == extra  # Server.stats() counts them
    assert held["rpcs_in_flight"] == MAX_CONCURRENT_STREAMS
    assert_no_leak(target, base, 16 * MiB, label)


def test_held_unary_streams_do_not_starve_other_clients(target: Target) -> None:
    """1,000 unary streams per connection on two connections, opened with HEADERS and
    no message, held forever. Bound: a unary call takes a handler thread only once its
    request is complete, so a grpcio client on another connection is served (every call
    within its 2 s deadline) while they are held. (Before commit 1a9a440 each held call
    took a thread and the good client got DEADLINE_EXCEEDED.)"""
    base = target.stats()
    socks: List[socket.socket] = []
    try:
        with GoodClient(target) as good:
            for _ in range(2):
                sock = connect(target.port)
                _hold_streams(sock, MAX_CONCURRENT_STREAMS)
                socks.append(sock)
            target.settle(lambda s: s["rpcs_in_flight"] >= 2 * MAX_CONCURRENT_STREAMS, timeout=10)
            time.sleep(3.0)
    finally:
        for sock in socks:
            sock.close()
    label = "held unary streams"
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)
