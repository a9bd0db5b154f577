"""Interop assertions that need the wire: message compression flags, per message.

grpcio's Python client cannot show a response's compressed flag, nor compress
one message of a stream and not the next; a raw HTTP/2 client (the ``h2``
library's peer would, but a few hand-written frames over a socket) can.
"""

from __future__ import annotations

import gzip
import socket
import struct
from typing import List, Optional, Sequence, Tuple

import hpack

from .conftest import Interop

# A raw client (frames written by hand, hpack for headers): tests/h2 shadows the
# h2 library's name on pytest's sys.path, and the wire is all these tests need.
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
_END_STREAM, _END_HEADERS, _ACK = 0x1, 0x4, 0x1
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _h2frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IBI", len(payload) << 8 | ftype, flags, sid) + payload


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def frame(self) -> Tuple[int, int, int, bytes]:
        while len(self.buf) < 9 or len(self.buf) < 9 + (struct.unpack(">I", self.buf[:4])[0] >> 8):
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self.buf += chunk
        head, flags, sid = struct.unpack(">IBI", self.buf[:9])
        length = head >> 8
        payload, self.buf = self.buf[9 : 9 + length], self.buf[9 + length :]
        return head & 0xFF, flags, sid & 0x7FFFFFFF, payload


def _frame(message: bytes, compress: bool) -> bytes:
    if compress:
        message = gzip.compress(message)
    return struct.pack(">BI", int(compress), len(message)) + message


def _messages(data: bytes) -> List[Tuple[bool, bytes]]:
    out = []
    pos = 0
    while pos < len(data):
        flag, length = struct.unpack_from(">BI", data, pos)
        payload = data[pos + 5 : pos + 5 + length]
        out.append((bool(flag), gzip.decompress(payload) if flag else payload))
        pos += 5 + length
    return out


def call(port: int, method: str, bodies: Sequence[Tuple[bytes, bool]]) -> Tuple[List[Tuple[bool, bytes]], dict]:
    """One RPC: send ``(message, compressed)`` pairs; return the response messages
    as ``(compressed flag, bytes)`` and the trailers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    reader = _Reader(sock)
    encoder, decoder = hpack.Encoder(), hpack.Decoder()
    big = (1 << 31) - 1
    sock.sendall(
        _PREFACE
        + _h2frame(_SETTINGS, 0, 0, struct.pack(">HI", 0x4, big))
        + _h2frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", big - 65535))
    )
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-encoding", "gzip"),
        ("grpc-accept-encoding", "gzip"),
    ]
    sock.sendall(_h2frame(_HEADERS, _END_HEADERS, 1, encoder.encode(headers)))
    pending = b"".join(_frame(message, compressed) for message, compressed in bodies)
    conn_window, stream_window, initial = 65535, 65535, 65535
    data = bytearray()
    trailers: Optional[dict] = None
    half_closed = False
    try:
        while True:
            while pending and min(conn_window, stream_window) > 0:
                size = min(len(pending), conn_window, stream_window, 16384)
                chunk, pending = pending[:size], pending[size:]
                conn_window -= size
                stream_window -= size
                sock.sendall(_h2frame(_DATA, 0 if pending else _END_STREAM, 1, chunk))
                half_closed = not pending
            if not pending and not half_closed:
                sock.sendall(_h2frame(_DATA, _END_STREAM, 1))
                half_closed = True
            ftype, flags, sid, payload = reader.frame()
            if ftype == _SETTINGS and not flags & _ACK:
                for i in range(0, len(payload), 6):
                    key, value = struct.unpack_from(">HI", payload, i)
                    if key == 0x4:
                        stream_window += value - initial
                        initial = value
                sock.sendall(_h2frame(_SETTINGS, _ACK, 0))
            elif ftype == _WINDOW_UPDATE:
                increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
                if sid == 0:
                    conn_window += increment
                else:
                    stream_window += increment
            elif ftype == _PING and not flags & _ACK:
                sock.sendall(_h2frame(_PING, _ACK, 0, payload))
            elif ftype == _DATA and sid == 1:
                data += payload
            elif ftype == _HEADERS and sid == 1:
                block = dict(decoder.decode(payload))
                if "grpc-status" in block:
                    trailers = block
                if flags & _END_STREAM:
                    break
            elif (ftype == _RST and sid == 1) or ftype == _GOAWAY:
                break
            if ftype == _DATA and flags & _END_STREAM:
                break
    finally:
        sock.close()
    assert trailers is not None
    return _messages(bytes(data)), trailers


def test_server_compressed_unary_flags(interop_server: Interop) -> None:
    pb = interop_server.protos
    for flag in (True, False):
        request = pb.SimpleRequest(
            response_size=314159,
            payload=pb.Payload(body=b"\0" * 271828),
            response_compressed=pb.BoolValue(value=flag),
        )
        messages, trailers = call(
            interop_server.port,
            "/grpc.testing.TestService/UnaryCall",
            [(request.SerializeToString(), False)],
        )
        assert trailers["grpc-status"] == "0"
        assert [compressed for compressed, _ in messages] == [flag]
        assert len(pb.SimpleResponse.FromString(messages[0][1]).payload.body) == 314159


def test_server_compressed_streaming_flags(interop_server: Interop) -> None:
    pb = interop_server.protos
    request = pb.StreamingOutputCallRequest(
        response_parameters=[
            pb.ResponseParameters(size=31415, compressed=pb.BoolValue(value=True)),
            pb.ResponseParameters(size=92653, compressed=pb.BoolValue(value=False)),
        ]
    )
    messages, trailers = call(
        interop_server.port,
        "/grpc.testing.TestService/StreamingOutputCall",
        [(request.SerializeToString(), False)],
    )
    assert trailers["grpc-status"] == "0"
    assert [compressed for compressed, _ in messages] == [True, False]
    sizes = [len(pb.StreamingOutputCallResponse.FromString(m).payload.body) for _, m in messages]
    assert sizes == [31415, 92653]


def test_client_compressed_streaming_per_message(interop_server: Interop) -> None:
    pb = interop_server.protos
    method = "/grpc.testing.TestService/StreamingInputCall"

    def req(expect: bool, size: int) -> bytes:
        message = pb.StreamingInputCallRequest(
            expect_compressed=pb.BoolValue(value=expect), payload=pb.Payload(body=b"\0" * size)
        )
        return bytes(message.SerializeToString())

    _, trailers = call(interop_server.port, method, [(req(True, 27182), False)])
    assert trailers["grpc-status"] == "3"  # INVALID_ARGUMENT: the probe
    messages, trailers = call(interop_server.port, method, [(req(True, 27182), True), (req(False, 45904), False)])
    assert trailers["grpc-status"] == "0"
    assert pb.StreamingInputCallResponse.FromString(messages[0][1]).aggregated_payload_size == 73086
