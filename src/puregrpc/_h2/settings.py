"""Settings (RFC 9113 section 6.5): our local settings and limits (``H2Config``), the
SETTINGS frame we send, and the validation of the peer's SETTINGS frames."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict

from .errors import ConnectionViolation, ErrorCode
from .frames import MAX_MAX_FRAME_SIZE, MIN_MAX_FRAME_SIZE
from .windows import DEFAULT_WINDOW, MAX_WINDOW

# Settings identifiers (RFC 9113 section 6.5.2, RFC 8441, RFC 9218).
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6
SETTINGS_ENABLE_CONNECT_PROTOCOL = 0x8
SETTINGS_NO_RFC7540_PRIORITIES = 0x9
_BOOLEAN_SETTINGS = (SETTINGS_ENABLE_PUSH, SETTINGS_ENABLE_CONNECT_PROTOCOL, SETTINGS_NO_RFC7540_PRIORITIES)

DEFAULT_TABLE_SIZE = 4096

SETTING = struct.Struct(">HI")


@dataclass
class H2Config:
    """Local settings and limits of one connection."""

    max_concurrent_streams: int = 1000
    initial_window_size: int = 1 << 20  # our per-stream receive window
    connection_window_size: int = 1 << 24  # our connection receive window
    max_frame_size: int = 16384  # largest frame we accept
    max_header_list_size: int = 16384  # after HPACK decoding (RFC 9113 6.5.2)
    header_table_size: int = 4096  # our HPACK decoder table

    # Flood and abuse bounds. Every budget is a token bucket refilled at ``*_rate``
    # tokens per second of ``now`` up to ``*_burst``; an empty bucket is a
    # connection error ENHANCE_YOUR_CALM.
    #
    # Streams ended abnormally because of the peer: its RST_STREAMs, streams we
    # refuse, stream errors it provokes (CVE-2023-44487 "rapid reset" and the
    # "MadeYouReset" variant). The burst covers cancelling every stream of a full
    # connection at once.
    reset_rate: float = 200.0
    reset_burst: int = 1000
    # PING and SETTINGS frames, which make us queue an ACK (CVE-2019-9512/9515).
    control_frame_rate: float = 100.0
    control_frame_burst: int = 500
    # Frames that cost us work and carry nothing: empty DATA without END_STREAM,
    # empty header fragments without END_HEADERS, PRIORITY, unknown frame types,
    # unsolicited ACKs, frames on closed streams (CVE-2019-9518 and friends), and
    # WINDOW_UPDATEs beyond what the DATA we sent warrants (see
    # budgets.WINDOW_UPDATE_CREDIT).
    useless_frame_rate: float = 100.0
    useless_frame_burst: int = 1000
    # ACKs and RST_STREAMs we generated that the caller has not taken with
    # data_to_send() yet: bounds our output when the peer does not read.
    max_queued_control_frames: int = 1000
    # Client PING policing (gRFC A8, grpc-core's server rules): a PING that comes
    # sooner than ``min_ping_interval`` seconds after the previous one, with no
    # HEADERS or DATA sent by us in between, is a strike; more than
    # ``max_ping_strikes`` ends the connection with GOAWAY ENHANCE_YOUR_CALM and debug
    # data "too_many_pings". With no stream open the interval is two hours unless
    # ``permit_pings_without_calls``. 0 strikes (the engine's default) turns it off.
    min_ping_interval: float = 300.0
    max_ping_strikes: int = 0
    permit_pings_without_calls: bool = False
    # CONTINUATION frames in one header block (CVE-2024-27316 family); the
    # compressed block is also bounded by max_header_block_size.
    max_continuation_frames: int = 128

    @property
    def max_header_block_size(self) -> int:
        """Bound on an accumulated compressed header block (HEADERS+CONTINUATION),
        past which the connection fails with ENHANCE_YOUR_CALM.

        A header list over ``max_header_list_size`` only refuses its stream, but
        that needs the whole block (HPACK state is per connection), so blocks well
        past the limit are still taken in: 8x the limit, at least 256 KiB."""
        return max(self.max_header_list_size * 8, 256 * 1024)


def check_config(cfg: H2Config) -> None:
    """Raise ValueError for settings we could not announce."""
    if not MIN_MAX_FRAME_SIZE <= cfg.max_frame_size <= MAX_MAX_FRAME_SIZE:
        raise ValueError("max_frame_size out of range")
    if not 0 <= cfg.initial_window_size <= MAX_WINDOW:
        raise ValueError("initial_window_size out of range")
    if not DEFAULT_WINDOW <= cfg.connection_window_size <= MAX_WINDOW:
        raise ValueError("connection_window_size out of range")


def local_settings_payload(cfg: H2Config) -> bytes:
    """The payload of the SETTINGS frame that opens our side of the connection."""
    settings = [
        (SETTINGS_MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams),
        (SETTINGS_INITIAL_WINDOW_SIZE, cfg.initial_window_size),
        (SETTINGS_MAX_FRAME_SIZE, cfg.max_frame_size),
        (SETTINGS_MAX_HEADER_LIST_SIZE, cfg.max_header_list_size),
        (SETTINGS_ENABLE_PUSH, 0),
    ]
    if cfg.header_table_size != DEFAULT_TABLE_SIZE:
        settings.append((SETTINGS_HEADER_TABLE_SIZE, cfg.header_table_size))
    return b"".join(SETTING.pack(k, v) for k, v in settings)


def read_settings(payload: bytes) -> Dict[int, int]:
    """The settings of a (non-ACK) SETTINGS frame from the peer, the last value of
    each identifier. Raises a connection error for a value RFC 9113 6.5.2 forbids.
    Unknown identifiers are kept: the caller ignores them."""
    length = len(payload)
    if length % 6:
        raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    values: Dict[int, int] = {}
    for offset in range(0, length, 6):
        ident, value = SETTING.unpack_from(payload, offset)
        if ident == SETTINGS_INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise ConnectionViolation(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too large")
        elif ident == SETTINGS_MAX_FRAME_SIZE:
            if not MIN_MAX_FRAME_SIZE <= value <= MAX_MAX_FRAME_SIZE:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "invalid MAX_FRAME_SIZE")
        elif ident in _BOOLEAN_SETTINGS and value > 1:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, f"invalid value for setting {ident}")
        values[ident] = value
    return values
