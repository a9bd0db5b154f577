"""HTTP/2 error codes (RFC 9113 section 7) and the exceptions that carry them."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Error codes of RST_STREAM and GOAWAY frames (RFC 9113 section 7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class H2Error(Exception):
    """A violation of RFC 9113 by the peer; ``code`` is what goes on the wire."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConnectionViolation(H2Error):
    """A connection error (RFC 9113 section 5.4.1): GOAWAY, then close."""


class StreamViolation(H2Error):
    """A stream error (RFC 9113 section 5.4.2): RST_STREAM on one stream only."""

    def __init__(self, stream_id: int, code: ErrorCode, message: str) -> None:
        super().__init__(code, message)
        self.stream_id = stream_id
