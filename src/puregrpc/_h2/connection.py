"""The server side of an HTTP/2 connection (RFC 9113), sans-I/O.

INTERFACE STUB: the implementation is being written to this contract.

Bytes in (``receive_data``), events out; commands in (``send_*``, ``reset_stream``,
``ping``, ``goaway``, ``acknowledge_received_data``), bytes out (``data_to_send``).
No sockets, no threads, no clock reads: ``now`` (seconds, monotonic) is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Union

from .events import Event

Bytes = Union[bytes, bytearray, memoryview]


@dataclass
class H2Config:
    """Local settings and limits of one connection."""

    max_concurrent_streams: int = 1000
    initial_window_size: int = 1 << 20  # our per-stream receive window
    connection_window_size: int = 1 << 24  # our connection receive window
    max_frame_size: int = 16384  # largest frame we accept
    max_header_list_size: int = 16384  # after HPACK decoding (RFC 9113 6.5.2)
    header_table_size: int = 4096  # our HPACK decoder table


class H2Connection:
    def __init__(self, config: H2Config | None = None) -> None:
        raise NotImplementedError

    def initiate_connection(self) -> None:
        """Queue the server connection preface (our SETTINGS frame)."""
        raise NotImplementedError

    def receive_data(self, data: Bytes, now: float = 0.0) -> List[Event]:
        """Feed received bytes; return the events they complete, in order."""
        raise NotImplementedError

    def data_to_send(self) -> bytes:
        """Take every byte queued for the peer (empty if none)."""
        raise NotImplementedError

    def send_headers(self, stream_id: int, block: bytes, end_stream: bool = False) -> None:
        """Queue an HPACK-encoded header block (see hpack_encoder) on a stream.
        Sent after any DATA still waiting for window on that stream."""
        raise NotImplementedError

    def send_data(self, stream_id: int, data: Bytes, end_stream: bool = False) -> None:
        """Queue DATA; it goes out as the stream and connection windows allow."""
        raise NotImplementedError

    def pending_bytes(self, stream_id: int) -> int:
        """DATA bytes queued on a stream and not yet sent for lack of window."""
        raise NotImplementedError

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Send RST_STREAM and drop anything still queued for the stream."""
        raise NotImplementedError

    def acknowledge_received_data(self, stream_id: int, length: int) -> None:
        """The application consumed ``length`` flow-controlled bytes: reopen windows."""
        raise NotImplementedError

    def ping(self, opaque: bytes) -> None:
        raise NotImplementedError

    def goaway(self, last_stream_id: int, error_code: int = 0, debug_data: bytes = b"") -> None:
        """Send GOAWAY. Streams the peer opens above ``last_stream_id`` later are
        refused with RST_STREAM REFUSED_STREAM and never reported."""
        raise NotImplementedError
