"""Flood and abuse bounds: token buckets on the caller's clock, the WINDOW_UPDATE
credit, and client PING policing (gRFC A8). Exceeding any of them is a connection
error ENHANCE_YOUR_CALM, raised by the connection."""

from __future__ import annotations

# WINDOW_UPDATE accounting. A client sends WINDOW_UPDATE to give back credit for DATA
# it received from us: at most one for the stream and one for the connection per DATA
# frame (grpcio, grpc-go, grpc-java, nghttp2 and h2 batch them further, to one per
# half or quarter window consumed). grpcio also opens each new stream's window by a
# few bytes before any DATA comes, and its increments are often tiny (+5, +105), so
# neither the increment's size nor the presence of DATA tells a legitimate
# WINDOW_UPDATE from a flood; their number does. So every DATA frame we write and
# every stream the peer opens earns it WINDOW_UPDATE_CREDIT free WINDOW_UPDATEs;
# beyond that credit each one is charged to the useless-frame budget. Measured with a
# grpcio 1.85 client (unary, failing, server-streaming, bidi calls; small and large
# messages; BDP probing on and off): at most 1.15 WINDOW_UPDATEs per DATA frame or
# stream, and no client can need more than 2 (stream and connection) per frame plus
# one per stream, so 3 leaves a legitimate transfer, however fast and however small
# its windows, never short of credit. A flood that no DATA or stream warrants (e.g. +1
# increments on the connection, 1.25 million frames per second) ends with
# ENHANCE_YOUR_CALM after the useless-frame burst. The credit is capped so that a
# long download does not bank an allowance for a later flood. A DATA frame cut short
# by the stream window under WINDOW_UPDATE_SMALL_FRAME bytes earns nothing:
# otherwise tiny increments on a stream with queued DATA ("data dribble",
# CVE-2019-9511) would each earn the credit for the next.
WINDOW_UPDATE_CREDIT = 3
WINDOW_UPDATE_CREDIT_MAX = 8192
WINDOW_UPDATE_SMALL_FRAME = 1024

# gRFC A8: with no stream open, a client PING more often than this is a strike
# unless the server permits pings without calls.
IDLE_PING_INTERVAL = 7200.0


class Budget:
    """A token bucket keyed on the caller's clock."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp: float | None = None

    def take(self, now: float) -> bool:
        stamp = self.stamp
        if stamp is None or now > stamp:
            if stamp is not None:
                tokens = self.tokens + (now - stamp) * self.rate
                self.tokens = tokens if tokens < self.burst else self.burst
            self.stamp = now
        self.tokens -= 1.0
        return self.tokens >= 0.0


class WindowUpdateCredit:
    """WINDOW_UPDATEs the peer may send for free (see WINDOW_UPDATE_CREDIT).

    The connection counts what earns credit (DATA frames written, streams opened) in
    a plain integer on its hot path; the credit is brought up to date only when a
    WINDOW_UPDATE arrives."""

    __slots__ = ("credit", "seen")

    def __init__(self) -> None:
        self.credit = 0  # WINDOW_UPDATEs the peer may still send for free
        self.seen = 0  # the connection's count of warrants at the last update

    def take(self, warrants: int) -> bool:
        """Spend one credit; False when there is none (charge the frame elsewhere)."""
        credit = self.credit
        if warrants != self.seen:
            credit += (warrants - self.seen) * WINDOW_UPDATE_CREDIT
            if credit > WINDOW_UPDATE_CREDIT_MAX:
                credit = WINDOW_UPDATE_CREDIT_MAX
            self.seen = warrants
        if credit > 0:
            self.credit = credit - 1
            return True
        self.credit = 0
        return False


class PingPolicy:
    """Client PING policing (gRFC A8, grpc-core's server rules): a PING sooner than
    the minimum interval after the previous one, with no HEADERS or DATA sent by us
    in between, is a strike; more than ``max_strikes`` is too many."""

    __slots__ = ("last", "max_strikes", "min_interval", "permit_without_calls", "strikes")

    def __init__(self, min_interval: float, max_strikes: int, permit_without_calls: bool) -> None:
        self.min_interval = min_interval
        self.max_strikes = max_strikes
        self.permit_without_calls = permit_without_calls
        self.last: float | None = None
        self.strikes = 0

    def too_many(self, now: float, sent_since_last: bool, streams_open: bool) -> bool:
        """Account for a PING received at ``now``; True when it is one strike too many."""
        last = self.last
        if sent_since_last:
            self.strikes = 0
            last = None
        self.last = now
        if last is None:
            return False
        interval = self.min_interval if streams_open or self.permit_without_calls else IDLE_PING_INTERVAL
        if now - last >= interval:
            return False
        self.strikes += 1
        return self.strikes > self.max_strikes
