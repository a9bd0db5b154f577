"""Server options: grpcio's names, checked once at ``server()`` time.

Every option puregrpc implements is in ``OPTIONS`` with grpcio's default and meaning
(docs/options.md is the same table for people). An option that is not there logs one
WARNING naming it (with the nearest known name, for misspellings); a bad value raises
``ValueError`` naming the option. Nothing is silently ignored.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

_LOGGER = logging.getLogger("puregrpc")

# grpc-core's "infinite" for millisecond options (INT_MAX).
INT_MAX = 2**31 - 1


class Option(NamedTuple):
    default: int
    minimum: int  # smallest value accepted (-1 where grpcio uses it for "unlimited")
    meaning: str


OPTIONS: Dict[str, Option] = {
    "grpc.max_receive_message_length": Option(
        4 * 1024 * 1024, -1, "largest request message, bytes (-1: unlimited); larger ones fail RESOURCE_EXHAUSTED"
    ),
    "grpc.max_send_message_length": Option(
        -1, -1, "largest response message, bytes (-1: unlimited); larger ones fail RESOURCE_EXHAUSTED"
    ),
    "grpc.max_concurrent_streams": Option(1000, 1, "streams (RPCs) open at once on one connection"),
    "grpc.max_metadata_size": Option(
        16384, 1, "largest request header list, bytes (RFC 9113 size); larger calls fail RESOURCE_EXHAUSTED"
    ),
    "grpc.so_reuseport": Option(0, 0, "1: several servers (processes) may bind the same port"),
    "grpc.keepalive_time_ms": Option(
        7_200_000, 1, "PING a connection after this long without data from it (INT_MAX: never)"
    ),
    "grpc.keepalive_timeout_ms": Option(20_000, 1, "close a connection whose keepalive PING is not acked in time"),
    "grpc.keepalive_permit_without_calls": Option(
        0, 0, "1: keepalive PINGs also on connections with no RPC, and clients may PING them as often"
    ),
    "grpc.http2.min_ping_interval_without_data_ms": Option(
        300_000, 0, "a client PING sooner than this after the last one, with no data sent since, is a strike"
    ),
    "grpc.http2.max_ping_strikes": Option(
        2, 0, "strikes tolerated before GOAWAY ENHANCE_YOUR_CALM 'too_many_pings' (0: unlimited)"
    ),
    "grpc.max_connection_idle_ms": Option(
        INT_MAX, 1, "a connection with no RPC for this long gets a graceful GOAWAY (INT_MAX: never)"
    ),
    "grpc.max_connection_age_ms": Option(
        INT_MAX, 1, "a connection this old (+-10 % jitter) gets a graceful GOAWAY (INT_MAX: never)"
    ),
    "grpc.max_connection_age_grace_ms": Option(
        INT_MAX, 0, "after the age GOAWAY, RPCs get this long to finish before the connection closes"
    ),
    "grpc.server_handshake_timeout_ms": Option(
        20_000, 1, "a connection must send the HTTP/2 preface and SETTINGS within this time"
    ),
    "grpc.http2.lookahead_bytes": Option(
        65535, 65535, "each stream's initial receive window: request bytes a client may send ahead of the handler"
    ),
}


@dataclass(frozen=True)
class ServerOptions:
    """The options of one server, checked; times in seconds (None: never)."""

    max_receive: int
    max_send: int
    max_concurrent_streams: int
    max_metadata_size: int
    reuse_port: bool
    keepalive_time: Optional[float]
    keepalive_timeout: float
    keepalive_permit_without_calls: bool
    min_ping_interval: float
    max_ping_strikes: int
    max_connection_idle: Optional[float]
    max_connection_age: Optional[float]
    max_connection_age_grace: Optional[float]
    handshake_timeout: float
    stream_window: int


def _seconds(ms: int) -> Optional[float]:
    return None if ms >= INT_MAX else ms / 1000.0


def parse_options(options: Sequence[Tuple[str, Any]]) -> ServerOptions:
    """Check ``options`` (grpcio's list of pairs): ValueError for a bad value, one
    WARNING per option puregrpc does not implement."""
    values: Dict[str, int] = {name: option.default for name, option in OPTIONS.items()}
    unknown: List[str] = []
    for item in options:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise ValueError(f"options must be (name, value) pairs, got {item!r}") from None
        if not isinstance(name, str):
            raise ValueError(f"option name must be a str, got {name!r}")
        option = OPTIONS.get(name)
        if option is None:
            if name not in unknown:
                unknown.append(name)
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"option {name!r} must be an int, got {value!r}")
        if value < option.minimum or (option.minimum == -1 and value < 0 and value != -1):
            raise ValueError(f"option {name!r} must be at least {option.minimum}, got {value}")
        values[name] = value
    for name in unknown:
        close = difflib.get_close_matches(name, OPTIONS, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _LOGGER.warning("server option %r is not supported by puregrpc and has no effect%s", name, hint)
    if values["grpc.http2.lookahead_bytes"] > INT_MAX:
        # RFC 9113 6.9.2: a flow-control window is at most 2^31-1.
        raise ValueError(f"option 'grpc.http2.lookahead_bytes' must be at most {INT_MAX}")
    receive = values["grpc.max_receive_message_length"]
    send = values["grpc.max_send_message_length"]
    return ServerOptions(
        max_receive=INT_MAX if receive < 0 else receive,
        max_send=INT_MAX if send < 0 else send,
        max_concurrent_streams=values["grpc.max_concurrent_streams"],
        max_metadata_size=values["grpc.max_metadata_size"],
        reuse_port=bool(values["grpc.so_reuseport"]),
        keepalive_time=_seconds(values["grpc.keepalive_time_ms"]),
        keepalive_timeout=values["grpc.keepalive_timeout_ms"] / 1000.0,
        keepalive_permit_without_calls=bool(values["grpc.keepalive_permit_without_calls"]),
        min_ping_interval=values["grpc.http2.min_ping_interval_without_data_ms"] / 1000.0,
        max_ping_strikes=values["grpc.http2.max_ping_strikes"],
        max_connection_idle=_seconds(values["grpc.max_connection_idle_ms"]),
        max_connection_age=_seconds(values["grpc.max_connection_age_ms"]),
        max_connection_age_grace=_seconds(values["grpc.max_connection_age_grace_ms"]),
        handshake_timeout=values["grpc.server_handshake_timeout_ms"] / 1000.0,
        stream_window=values["grpc.http2.lookahead_bytes"],
    )


__all__ = ["INT_MAX", "OPTIONS", "ServerOptions", "parse_options"]
