"""What the hostile-client tests share: the server subprocess, a well-behaved grpcio
client that keeps calling during an attack, and a flooding loop on a raw socket."""

from __future__ import annotations

import json
import pathlib
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

import grpc
import hpack
from integration._support import CLIENT_PREFACE, Frame, frame_bytes, grpc_request, split_frames

SCRIPT = pathlib.Path(__file__).with_name("target_server.py")
SERVICE = "hostile.Target"
KiB = 1024
MiB = 1024 * 1024

ENHANCE_YOUR_CALM = 0xB
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7

# The well-behaved client's deadline: every one of its calls must finish within it.
GOOD_DEADLINE = 2.0


class Target:
    """``target_server.py`` in a subprocess; ``stats()`` asks it for its figures."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.log: List[str] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"target server did not start: {line!r} {self.log[-20:]}")
        self.port = int(line.split()[1])
        self.target = f"localhost:{self.port}"

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def stats(self) -> Dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write("stats\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"target server died: {self.log[-20:]}")
        result: Dict[str, Any] = json.loads(line)
        return result

    def settle(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float = 15.0) -> Dict[str, Any]:
        """Poll stats() until ``predicate`` holds (or ``timeout`` passes); the last stats."""
        end = time.monotonic() + timeout
        stats = self.stats()
        while not predicate(stats) and time.monotonic() < end:
            time.sleep(0.1)
            stats = self.stats()
        return stats

    def quiet(self, base: Dict[str, Any], timeout: float = 15.0) -> Dict[str, Any]:
        """Wait until nothing the attack started is left: no RPC in flight, no handler
        running, the connections and file descriptors of ``base``; the stats then."""

        def done(s: Dict[str, Any]) -> bool:
            return (
                s["rpcs_in_flight"] == 0
                and s["handlers_running"] == 0
                and s["connections"] <= base["connections"]
                and s["fds"] <= base["fds"]
                and s["threads"] <= base["threads"]
            )

        return self.settle(done, timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def assert_no_leak(target: Target, base: Dict[str, Any], rss_bound: int, label: str) -> Dict[str, Any]:
    """After an attack: nothing in flight or running, no extra connection, thread or file
    descriptor; RSS grown by less than ``rss_bound``. Prints the figures."""
    after = target.quiet(base)
    grown = after["rss"] - base["rss"]
    print(
        f"{label}: after the attack in flight {after['rpcs_in_flight']}, handlers running "
        f"{after['handlers_running']}, connections {base['connections']}->{after['connections']}, "
        f"threads {base['threads']}->{after['threads']}, fds {base['fds']}->{after['fds']}, "
        f"RSS {grown / MiB:+.1f} MiB"
    )
    assert after["rpcs_in_flight"] == 0, after
    assert after["handlers_running"] == 0, after
    assert after["connections"] <= base["connections"], after
    assert after["threads"] <= base["threads"], after
    assert after["fds"] <= base["fds"], after
    assert grown < rss_bound, f"RSS grew {grown / MiB:.1f} MiB (bound {rss_bound / MiB:.1f} MiB)"
    return after


class GoodClient:
    """A grpcio client on its own connection, calling Echo (deadline GOOD_DEADLINE) in a
    loop for as long as the attack lasts; records each call's outcome and latency."""

    def __init__(self, target: Target) -> None:
        self.channel = grpc.insecure_channel(target.target)
        self.echo = self.channel.unary_unary(f"/{SERVICE}/Echo")
        self.echo(b"warm-up", timeout=10)  # the connection exists before the attack
        self.latencies: List[float] = []
        self.failures: List[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            message = b"good-%d" % n
            n += 1
            started = time.monotonic()
            try:
                reply = self.echo(message, timeout=GOOD_DEADLINE)
                if reply != message:
                    self.failures.append(f"wrong reply {reply[:20]!r}")
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")  # type: ignore[attr-defined]
            self.latencies.append(time.monotonic() - started)
            self._stop.wait(0.01)

    def __enter__(self) -> GoodClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(GOOD_DEADLINE + 5)
        self.channel.close()

    def report(self, label: str) -> str:
        worst = max(self.latencies) if self.latencies else float("nan")
        line = (
            f"{label}: good client {len(self.latencies) - len(self.failures)}/{len(self.latencies)} calls ok, "
            f"worst latency {worst * 1000:.0f} ms"
        )
        print(line)
        return line

    def assert_served(self, label: str) -> None:
        """Every call succeeded within the deadline, and some were made."""
        self.report(label)
        assert self.latencies, "the good client made no call"
        assert not self.failures, f"{len(self.failures)} of {len(self.latencies)} failed: {self.failures[:3]}"


T = TypeVar("T")


def repeat(attack: Callable[[], T], seconds: float = 0.75) -> List[T]:
    """Run ``attack`` (one connection each) again and again for ``seconds``: a bound
    ends one attack in milliseconds, and the good client needs an attack to overlap."""
    results: List[T] = []
    end = time.monotonic() + seconds
    while not results or time.monotonic() < end:
        results.append(attack())
    return results


def summary(results: Sequence[Flood]) -> str:
    worst = max(results, key=lambda r: r.units)
    slowest = max(r.seconds for r in results)
    return f"{len(results)} connections; the worst sent {worst}; slowest GOAWAY {slowest * 1000:.0f} ms"


# --- raw frames --------------------------------------------------------------------


def settings_frame(*pairs: Sequence[int], ack: bool = False) -> bytes:
    payload = b"".join(ident.to_bytes(2, "big") + value.to_bytes(4, "big") for ident, value in pairs)
    return frame_bytes(0x4, 0x1 if ack else 0x0, 0, payload)


def request_block(method: str) -> bytes:
    """A request header block that neither refers to nor changes the HPACK dynamic table
    (literals never indexed): valid any number of times on one connection."""
    fields = [hpack.NeverIndexedHeaderTuple(n, v) for n, v in grpc_request(f"/{SERVICE}/{method}")]
    return bytes(hpack.Encoder().encode(fields))


def headers(sid: int, block: bytes, end_stream: bool = False, end_headers: bool = True) -> bytes:
    return frame_bytes(0x1, (0x1 if end_stream else 0) | (0x4 if end_headers else 0), sid, block)


def rst(sid: int, code: int = 0x8) -> bytes:
    return frame_bytes(0x3, 0, sid, code.to_bytes(4, "big"))


def goaway_of(frames: List[Frame]) -> Optional[tuple[int, bytes]]:
    """(error code, debug data) of the first GOAWAY in ``frames``."""
    for kind, _, _, payload in frames:
        if kind == 0x7:
            return int.from_bytes(payload[4:8], "big"), payload[8:]
    return None


def responses(frames: List[Frame]) -> Dict[int, Dict[str, str]]:
    """The header fields the server sent, per stream (HEADERS decoded in order, as the
    HPACK table needs; CONTINUATION is not expected from the server for these)."""
    decoder = hpack.Decoder()
    out: Dict[int, Dict[str, str]] = {}
    for kind, _, sid, payload in frames:
        if kind == 0x1:
            for name, value in decoder.decode(payload):
                out.setdefault(sid, {})[str(name)] = str(value)
    return out


def connect(port: int, preface: bytes = CLIENT_PREFACE) -> socket.socket:
    """A client socket with a small send buffer, so that what a flood has sent is close to
    what the server has read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * KiB)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    if preface:
        sock.sendall(preface)
    return sock


class Flood:
    """What a flood achieved before the server ended it."""

    def __init__(self) -> None:
        self.units = 0  # units sent (an upper bound on what the server took in)
        self.seconds = 0.0  # from the first unit to the GOAWAY (or the end)
        self.goaway: Optional[tuple[int, bytes]] = None
        self.closed = False
        self.frames: List[Frame] = []

    def count(self, kind: int, flags: int = 0) -> int:
        """Frames of ``kind`` (with all of ``flags`` set) the server sent."""
        return sum(1 for k, f, _, _ in self.frames if k == kind and f & flags == flags)

    def __str__(self) -> str:
        code = "none" if self.goaway is None else f"0x{self.goaway[0]:x} {self.goaway[1].decode(errors='replace')!r}"
        return f"{self.units} sent in {self.seconds:.2f} s, GOAWAY {code}, closed {self.closed}"


def flood(
    sock: socket.socket,
    unit: Callable[[int], bytes],
    limit: int,
    batch: int = 50,
) -> Flood:
    """Send ``unit(i)`` for i in 0..limit-1, ``batch`` at a time, reading what comes
    back between batches; stop at a GOAWAY, a closed connection, or ``limit``."""
    result = Flood()
    buffer = b""
    started = time.monotonic()
    sock.settimeout(10)

    def take(data: bytes) -> None:
        nonlocal buffer
        more, buffer = split_frames(buffer + data)
        result.frames += more
        if result.goaway is None:
            result.goaway = goaway_of(more)
            if result.goaway is not None:
                result.seconds = time.monotonic() - started

    while result.units < limit and result.goaway is None and not result.closed:
        count = min(batch, limit - result.units)
        try:
            sock.sendall(b"".join(unit(result.units + i) for i in range(count)))
        except (BrokenPipeError, ConnectionResetError):
            result.closed = True
            break
        except socket.timeout:
            break  # the server stopped reading
        result.units += count
        while select.select([sock], [], [], 0)[0]:
            try:
                data = sock.recv(1 << 20)
            except ConnectionResetError:
                data = b""
            if not data:
                result.closed = True
                break
            take(data)
    # Read what is left: the GOAWAY (if not seen yet) and the close.
    end = time.monotonic() + 10
    sock.settimeout(0.5)
    while not result.closed and time.monotonic() < end:
        try:
            data = sock.recv(1 << 20)
        except socket.timeout:
            if result.goaway is None and result.units >= limit:
                break  # the flood ran to its limit and the server is quiet
            continue
        except ConnectionResetError:
            data = b""
        if not data:
            result.closed = True
            break
        take(data)
    if result.goaway is None:
        result.seconds = time.monotonic() - started
    return result
