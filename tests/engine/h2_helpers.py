"""In-memory wiring of an ``h2`` client (the reference peer) to our engine."""

from __future__ import annotations

import struct
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Type, TypeVar

import h2.config
import h2.connection
import h2.events
import h2.settings

from puregrpc._h2.connection import PREFACE, H2Config, H2Connection
from puregrpc._h2.events import Event
from puregrpc._h2.hpack_encoder import encode_headers

REQUEST: List[Tuple[str, str]] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/pkg.Service/Method"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]
RESPONSE_BLOCK = encode_headers([(b":status", b"200"), (b"content-type", b"application/grpc")])
TRAILERS_BLOCK = encode_headers([(b"grpc-status", b"0")])

E = TypeVar("E")


def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """A raw HTTP/2 frame (RFC 9113 section 4.1)."""
    return struct.pack(">IBI", len(payload) << 8 | ftype, flags, sid) + payload


def settings_frame(*pairs: Tuple[int, int], ack: bool = False) -> bytes:
    return frame(0x4, 0x1 if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def parse_frames(data: bytes) -> List[Tuple[int, int, int, bytes]]:
    """Split raw server output into (type, flags, stream id, payload)."""
    frames = []
    pos = 0
    while pos < len(data):
        head, flags, sid = struct.unpack_from(">IBI", data, pos)
        length = head >> 8
        frames.append((head & 0xFF, flags, sid & 0x7FFFFFFF, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    return frames


def of_type(events: Iterable[Any], kind: Type[E]) -> List[E]:
    return [e for e in events if isinstance(e, kind)]


class Pair:
    """An h2 client and our server engine, connected by in-memory byte pipes."""

    def __init__(
        self,
        config: Optional[H2Config] = None,
        client_settings: Optional[dict[int, int]] = None,
        handshake: bool = True,
    ) -> None:
        self.server = H2Connection(config)
        self.client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.now = 0.0
        self.server_events: List[Event] = []
        self.client_events: List[h2.events.Event] = []
        if handshake:
            self.server.initiate_connection()
            self.client.initiate_connection()
            if client_settings:
                self.client.update_settings(client_settings)
            self.pump()

    def to_server(self, data: bytes) -> List[Event]:
        events = self.server.receive_data(data, self.now)
        self.server_events += events
        return events

    def to_client(self) -> List[h2.events.Event]:
        data = self.server.data_to_send()
        events = self.client.receive_data(data) if data else []
        self.client_events += events
        return events

    def pump(self) -> Tuple[List[Event], List[h2.events.Event]]:
        """Exchange bytes until both sides are quiet; return the new events."""
        server_events: List[Event] = []
        client_events: List[h2.events.Event] = []
        for _ in range(100):
            out = self.client.data_to_send()
            if out:
                server_events += self.to_server(out)
            got = self.to_client()
            client_events += got
            if not out and not got and not self.client.data_to_send():
                break
        return server_events, client_events

    def request(
        self,
        headers: Sequence[Tuple[str, str]] = REQUEST,
        body: Optional[bytes] = b"",
        end_stream: bool = True,
    ) -> int:
        sid: int = self.client.get_next_available_stream_id()
        self.client.send_headers(sid, list(headers), end_stream=body is None and end_stream)
        if body is not None:
            self.client.send_data(sid, body, end_stream=end_stream)
        return sid

    def respond(self, sid: int, body: bytes = b"ok") -> None:
        self.server.send_headers(sid, RESPONSE_BLOCK)
        self.server.send_data(sid, body)
        self.server.send_headers(sid, TRAILERS_BLOCK, end_stream=True)


def raw_server(config: Optional[H2Config] = None) -> H2Connection:
    """An engine past the handshake, for tests that speak raw frames."""
    server = H2Connection(config)
    server.initiate_connection()
    server.receive_data(PREFACE + settings_frame())
    server.receive_data(settings_frame(ack=True))
    server.data_to_send()
    return server


REQUEST_FIELDS: List[Tuple[bytes, bytes]] = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/pkg.Service/Method"),
    (b":authority", b"localhost"),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
]
# Stateless encoding (no dynamic table), so raw tests can build blocks in any order.
REQUEST_BLOCK = encode_headers(REQUEST_FIELDS)


def headers_frame(sid: int, block: bytes = REQUEST_BLOCK, end_stream: bool = False, end_headers: bool = True) -> bytes:
    flags = (0x1 if end_stream else 0) | (0x4 if end_headers else 0)
    return frame(0x1, flags, sid, block)


def data_frame(sid: int, data: bytes, end_stream: bool = False) -> bytes:
    return frame(0x0, 0x1 if end_stream else 0, sid, data)


def rst_frame(sid: int, code: int = 0x8) -> bytes:
    return frame(0x3, 0, sid, struct.pack(">I", code))


def window_update_frame(sid: int, increment: int) -> bytes:
    return frame(0x8, 0, sid, struct.pack(">I", increment))


def ping_frame(data: bytes = b"12345678", ack: bool = False) -> bytes:
    return frame(0x6, 0x1 if ack else 0, 0, data)


def goaway_of(data: bytes) -> Optional[Tuple[int, int, bytes]]:
    """(last stream id, error code, debug data) of the GOAWAY in ``data``, if any."""
    for ftype, _, _, payload in parse_frames(data):
        if ftype == 0x7:
            last, code = struct.unpack(">II", payload[:8])
            return last & 0x7FFFFFFF, code, payload[8:]
    return None


def rsts_of(data: bytes) -> List[Tuple[int, int]]:
    """(stream id, error code) of every RST_STREAM in ``data``."""
    return [(sid, struct.unpack(">I", payload)[0]) for ftype, _, sid, payload in parse_frames(data) if ftype == 0x3]
