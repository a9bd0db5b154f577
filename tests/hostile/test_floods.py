"""Frame floods over a real socket, each ended by its bound (GOAWAY ENHANCE_YOUR_CALM),
never by the test's patience, while a grpcio client on another connection is served.

Each flood may send 20 to 100 times what its bound allows; it stops when the server's
GOAWAY arrives. The engine-level tests of the same bounds are in
tests/engine/test_h2_limits.py; these check them end to end, with the server's memory,
threads and file descriptors measured in its own process."""

from __future__ import annotations

import struct
from typing import Callable, Dict, List, Set, Tuple

import hpack
import pytest
from integration._support import Frame, frame_bytes, grpc_request, read_frames

from ._hostile import (
    ENHANCE_YOUR_CALM,
    FRAME_SIZE_ERROR,
    SERVICE,
    Flood,
    GoodClient,
    MiB,
    Target,
    assert_no_leak,
    connect,
    flood,
    headers,
    repeat,
    request_block,
    responses,
    rst,
    summary,
)

# What the server may take in before it ends a flood: the engine's budgets
# (H2Config: burst + rate x seconds), with the seconds the flood lasted.
RESET_BURST, RESET_RATE = 1000, 200.0
CONTROL_BURST, CONTROL_RATE = 500, 100.0
USELESS_BURST, USELESS_RATE = 1000, 100.0


def _ping(i: int) -> bytes:
    return frame_bytes(0x6, 0, 0, i.to_bytes(8, "big"))


def _settings(i: int) -> bytes:
    return frame_bytes(0x4, 0, 0, (3).to_bytes(2, "big") + (100 + i % 100).to_bytes(4, "big"))


def _empty_data(i: int) -> bytes:
    return frame_bytes(0x0, 0, 1, b"")


def _priority(i: int) -> bytes:
    return frame_bytes(0x2, 0, 1 + 2 * (i % 1000), struct.pack(">IB", 0, 15))


# Floods whose every frame the server answers with an ACK (frame type, flags): what it
# took in is then counted exactly.
ACKED = {"PING": (0x6, 0x1), "SETTINGS": (0x4, 0x1)}

# name: (setup after the preface, one flood unit, budget burst, budget rate)
CONTROL_FLOODS: Dict[str, tuple[Callable[[], bytes], Callable[[int], bytes], int, float]] = {
    "PING": (lambda: b"", _ping, CONTROL_BURST, CONTROL_RATE),
    "SETTINGS": (lambda: b"", _settings, CONTROL_BURST, CONTROL_RATE),
    "empty DATA": (lambda: headers(1, request_block("Upload")), _empty_data, USELESS_BURST, USELESS_RATE),
    "PRIORITY": (lambda: b"", _priority, USELESS_BURST, USELESS_RATE),
}


@pytest.mark.parametrize("kind", list(CONTROL_FLOODS))
def test_control_frame_flood_is_ended_by_its_budget(kind: str, target: Target) -> None:
    """100 x the budget is offered, on connection after connection for 0.75 s; each ends
    with GOAWAY ENHANCE_YOUR_CALM after at most burst + rate x seconds frames."""
    setup, unit, burst, rate = CONTROL_FLOODS[kind]
    base = target.stats()
    limit = 100 * burst

    def attack() -> Flood:
        with connect(target.port) as sock:
            sock.sendall(setup())
            return flood(sock, unit, limit)

    with GoodClient(target) as good:
        results = repeat(attack)
    label = f"{kind} flood"
    print(f"{label}: {summary(results)}")
    for result in results:
        assert result.goaway is not None and result.goaway[0] == ENHANCE_YOUR_CALM, result
        assert result.units < limit
        if kind in ACKED:
            # The ACKs count exactly what was taken in (SETTINGS: one for the preface's).
            acks = result.count(*ACKED[kind]) - (1 if kind == "SETTINGS" else 0)
            assert acks <= burst + rate * result.seconds + 1, (acks, result)
    if kind in ACKED:
        print(f"{label}: at most {max(r.count(*ACKED[kind]) for r in results)} ACKs per connection")
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


@pytest.mark.parametrize("where", ["connection", "closed stream"])
def test_window_update_flood_is_ended(where: str, target: Target) -> None:
    """WINDOW_UPDATEs of 1 byte: each is legal, but 100,000 of them only cost the
    server work. Bound: 3 free per DATA frame the server sent or stream opened, the rest
    charged to the useless-frame budget; GOAWAY ENHANCE_YOUR_CALM well before 100,000.
    (Before commit 3b49142 all 100,000 were taken in, with no GOAWAY.)"""
    base = target.stats()
    limit = 100_000

    def attack() -> Flood:
        with connect(target.port) as sock:
            sid = 0
            if where == "closed stream":
                sid = 1
                sock.sendall(headers(1, request_block("Echo"), end_stream=True))
            return flood(sock, lambda i: frame_bytes(0x8, 0, sid, (1).to_bytes(4, "big")), limit, batch=500)

    with GoodClient(target) as good:
        results = repeat(attack)
    label = f"WINDOW_UPDATE flood ({where})"
    print(f"{label}: {summary(results)}")
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)
    for result in results:
        assert result.goaway is not None and result.goaway[0] == ENHANCE_YOUR_CALM, result
        assert result.units < limit


def test_rapid_reset_is_ended_by_the_reset_budget(target: Target) -> None:
    """CVE-2023-44487: HEADERS then RST_STREAM at once, stream after stream, on
    connection after connection for 0.75 s. The server counts the RPCs it started."""
    block = request_block("Hold")
    limit = 100_000

    def attack() -> Tuple[Flood, int]:
        before = target.stats()["rpcs_started"]
        with connect(target.port) as sock:
            result = flood(sock, lambda i: headers(1 + 2 * i, block) + rst(1 + 2 * i), limit, batch=100)
        return result, target.stats()["rpcs_started"] - before

    base = target.stats()
    with GoodClient(target) as good:
        rounds = repeat(attack)
    after = target.stats()
    ran = after["handlers_total"] - base["handlers_total"]
    label = "rapid reset"
    most = max(started for _, started in rounds)
    print(
        f"{label}: {summary([r for r, _ in rounds])}; at most {most} RPCs started per connection, "
        f"{ran} handlers ran in all"
    )
    for result, started in rounds:
        assert result.goaway is not None and result.goaway[0] == ENHANCE_YOUR_CALM, result
        assert b"reset" in result.goaway[1]
        assert result.units < limit
        assert started <= RESET_BURST + RESET_RATE * result.seconds + 100, (started, result)
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def test_continuation_flood_is_ended_by_the_frame_count(target: Target) -> None:
    """CVE-2024-27316 style: a header block that never ends, in 1-byte CONTINUATIONs
    (a header block may have at most 128)."""
    limit = 100_000
    block = request_block("Echo")

    def attack() -> Flood:
        with connect(target.port) as sock:
            sock.sendall(headers(1, block[:1], end_headers=False))
            return flood(sock, lambda i: frame_bytes(0x9, 0, 1, block[1:2]), limit, batch=100)

    base = target.stats()
    with GoodClient(target) as good:
        results = repeat(attack)
    label = "CONTINUATION flood"
    print(f"{label}: {summary(results)}")
    for result in results:
        assert result.goaway is not None and result.goaway[0] == ENHANCE_YOUR_CALM, result
        assert b"CONTINUATION" in result.goaway[1]
        assert result.units < limit
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def test_one_mib_header_list_is_ended_by_the_block_bound(target: Target) -> None:
    """1 MiB of literal header fields in HEADERS + CONTINUATION (16 KiB frames), sent a
    frame at a time: the compressed block may not pass 256 KiB (8 x max_metadata_size,
    at least 256 KiB). What was sent before the GOAWAY arrived includes what was still in
    the sockets' buffers; the engine-level bound is tests/engine/test_h2_limits.py's
    test_header_block_size_bound."""
    fields = grpc_request(f"/{SERVICE}/Echo") + [(f"x-h{i}", "v" * 1000) for i in range(1040)]
    block = bytes(hpack.Encoder().encode(fields, huffman=False))
    assert len(block) > MiB
    pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)]

    def unit(i: int) -> bytes:
        last = i + 2 == len(pieces)
        return frame_bytes(0x9, 0x4 if last else 0, 1, pieces[i + 1])

    def attack() -> Flood:
        with connect(target.port) as sock:
            sock.sendall(headers(1, pieces[0], end_headers=False))
            return flood(sock, unit, len(pieces) - 1, batch=1)

    base = target.stats()
    with GoodClient(target) as good:
        results = repeat(attack)
    label = "1 MiB header list"
    most = max(r.units + 1 for r in results) * 16
    print(f"{label}: {summary(results)}; at most {most} KiB of header block sent before the GOAWAY")
    for result in results:
        assert result.goaway is not None and result.goaway[0] == ENHANCE_YOUR_CALM, result
        assert b"header block too large" in result.goaway[1]
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def test_hpack_bomb_refuses_streams_then_the_connection(target: Target) -> None:
    """A 4 KB header in the HPACK table, referenced 200 times per block: 230-byte blocks
    that decode to 800 KB each (16 GB for 20,000). Each stream is refused
    RESOURCE_EXHAUSTED without building the list; repeated, they use up the reset
    budget and the connection gets GOAWAY."""
    encoder = hpack.Encoder()
    first = bytes(encoder.encode([*grpc_request(f"/{SERVICE}/Echo"), ("x-bomb", "b" * 4000)]))
    bomb = request_block("Echo") + bytes([0x80 | 62]) * 200  # x-bomb is dynamic entry 62
    assert len(bomb) < 300
    limit = 20_000

    def attack() -> Tuple[Flood, int]:
        with connect(target.port) as sock:
            sock.sendall(headers(1, first, end_stream=True))
            result = flood(sock, lambda i: headers(3 + 2 * i, bomb, end_stream=True), limit, batch=100)
        refused = [r for sid, r in responses(result.frames).items() if sid > 1 and r.get("grpc-status") == "8"]
        return result, len(refused)

    base = target.stats()
    with GoodClient(target) as good:
        rounds = repeat(attack)
    label = "HPACK bomb"
    built = max(r.units for r, _ in rounds) * 200 * 4038
    print(
        f"{label}: {summary([r for r, _ in rounds])}; at most {max(n for _, n in rounds)} streams refused "
        f"RESOURCE_EXHAUSTED per connection; decoded size if built {built / MiB:.0f} MiB for the worst connection"
    )
    for result, refused in rounds:
        assert result.goaway is not None and result.goaway[0] == ENHANCE_YOUR_CALM, result
        assert result.units < limit
        assert 0 < refused <= RESET_BURST + RESET_RATE * result.seconds + 1, (refused, result)
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def test_invalid_frame_sizes_end_the_connection_at_once(target: Target) -> None:
    """Frames whose length is wrong for their type: GOAWAY FRAME_SIZE_ERROR at once; a
    declared 16 MiB frame is refused from its 9-byte header, the payload never awaited."""
    cases = {
        "DATA declaring 16 MiB": (0xFFFFFF).to_bytes(3, "big") + bytes([0x0, 0x0]) + (1).to_bytes(4, "big"),
        "PING of 7 bytes": frame_bytes(0x6, 0, 0, b"\0" * 7),
        "SETTINGS of 5 bytes": frame_bytes(0x4, 0, 0, b"\0" * 5),
        "WINDOW_UPDATE of 3 bytes": frame_bytes(0x8, 0, 0, b"\0" * 3),
        "RST_STREAM of 3 bytes": headers(1, request_block("Upload")) + frame_bytes(0x3, 0, 1, b"\0" * 3),
        "GOAWAY of 7 bytes": frame_bytes(0x7, 0, 0, b"\0" * 7),
    }
    slowest: Dict[str, float] = {}

    def attack() -> None:
        for name, bad in cases.items():
            with connect(target.port) as sock:
                result = flood(sock, lambda i, data=bad: data, 1, batch=1)
            assert result.goaway is not None and result.goaway[0] == FRAME_SIZE_ERROR, (name, result)
            assert result.closed, (name, result)
            slowest[name] = max(slowest.get(name, 0.0), result.seconds)

    base = target.stats()
    with GoodClient(target) as good:
        rounds = repeat(attack)
    label = "invalid frame sizes"
    print(f"{label}: {len(rounds)} rounds of {len(cases)}; slowest GOAWAY {max(slowest.values()) * 1000:.0f} ms")
    assert max(slowest.values()) < 5
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def test_declared_one_gib_message_is_refused_without_allocating(target: Target) -> None:
    """200 streams per connection each declaring a 1 GiB request message (5-byte gRPC
    prefix, then 100 bytes): each fails RESOURCE_EXHAUSTED from its prefix (limit 4 MiB)."""
    block = request_block("Echo")
    prefix = b"\x00" + (1 << 30).to_bytes(4, "big")
    count = 200
    peak = 0
    codes: Set[str] = set()

    def attack() -> int:
        nonlocal peak
        with connect(target.port) as sock:
            sock.sendall(
                b"".join(
                    headers(1 + 2 * i, block) + frame_bytes(0x0, 0, 1 + 2 * i, prefix + b"x" * 100)
                    for i in range(count)
                )
            )
            frames = read_frames(sock, lambda f: len(_ended(f)) >= count, timeout=10)
            peak = max(peak, target.stats()["rss"])
        codes.update(r.get("grpc-status", "") for r in responses(frames).values())
        return len(_ended(frames))

    base = target.stats()
    with GoodClient(target) as good:
        answered = repeat(attack)
    label = "1 GiB declared message"
    grown = peak - base["rss"]
    print(
        f"{label}: {len(answered)} connections x {count} streams, answered {min(answered)} at least, "
        f"grpc-status {codes}; server RSS {grown / MiB:+.1f} MiB at most"
    )
    assert min(answered) == count
    assert codes == {"8"}  # RESOURCE_EXHAUSTED
    assert grown < 16 * MiB
    good.assert_served(label)
    assert_no_leak(target, base, 16 * MiB, label)


def _ended(frames: List[Frame]) -> Set[int]:
    return {sid for kind, flags, sid, _ in frames if kind in (0x0, 0x1) and flags & 0x1}
