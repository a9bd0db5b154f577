"""What a server has done: counters kept by the I/O thread, read from any thread.

The I/O thread is the only writer, so counting costs a few integer increments per
RPC and needs no lock. Readers take a ``ServerStats`` snapshot; its fields are
consistent with each other to within the RPCs that ended while it was taken.

RPC observers (``RpcObserver``, e.g. the Prometheus metrics) are told of every RPC
that found a handler, on the I/O thread: they must be quick and must not block.
"""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Protocol

from ._status import StatusCode

_CODES = tuple(StatusCode)


def grpc_type(request_streaming: bool, response_streaming: bool) -> str:
    """The RPC type as py-grpc-prometheus (and grpc-java's MethodType) names it."""
    if request_streaming:
        return "BIDI_STREAMING" if response_streaming else "CLIENT_STREAMING"
    return "SERVER_STREAMING" if response_streaming else "UNARY"


class RpcRecord(NamedTuple):
    """One finished RPC, as observers see it."""

    method: str  # "/package.Service/Method"
    grpc_type: str  # UNARY, CLIENT_STREAMING, SERVER_STREAMING or BIDI_STREAMING
    code: StatusCode
    seconds: float  # from the request headers to the status (or the reset)
    messages_received: int
    messages_sent: int


class RpcObserver(Protocol):
    def rpc_started(self, method: str, grpc_type: str) -> None: ...

    def rpc_finished(self, record: RpcRecord) -> None: ...


class ServerStats(NamedTuple):
    """A snapshot of ``Server.stats()``."""

    rpcs_started: int  # every RPC that was accepted (a handler looked up or not)
    rpcs_finished: Dict[str, int]  # by status code name (CANCELLED for a client reset)
    rpcs_in_flight: int
    connections: int  # open now
    connections_total: int  # accepted since start
    bytes_received: int  # on every connection, HTTP/2 framing included
    bytes_sent: int
    # Streams answered RST_STREAM REFUSED_STREAM, never run (safe for the client to
    # retry): past the concurrent-stream limit, above a GOAWAY's last stream id, or
    # opened once stop() was called.
    streams_refused: int


class Counters:
    """The live counters of one server (written on the I/O thread only)."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "connections",
        "connections_total",
        "finished",
        "started",
        "streams_refused",
    )

    def __init__(self) -> None:
        self.started = 0
        self.finished: List[int] = [0] * len(_CODES)  # indexed by code number; never resized
        self.connections = 0
        self.connections_total = 0
        self.bytes_received = 0
        self.bytes_sent = 0
        self.streams_refused = 0

    def snapshot(self) -> ServerStats:
        finished = list(self.finished)
        started = self.started
        done = sum(finished)
        return ServerStats(
            rpcs_started=started,
            rpcs_finished={code.name: finished[code.value[0]] for code in _CODES if finished[code.value[0]]},
            rpcs_in_flight=max(0, started - done),
            connections=self.connections,
            connections_total=self.connections_total,
            bytes_received=self.bytes_received,
            bytes_sent=self.bytes_sent,
            streams_refused=self.streams_refused,
        )


__all__ = ["Counters", "RpcObserver", "RpcRecord", "ServerStats", "grpc_type"]
