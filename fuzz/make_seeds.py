"""Write the seed corpora under fuzz/corpus/<target>/ (small, deterministic).

    python fuzz/make_seeds.py

The HTTP/2 seeds are real client traffic made by the ``h2`` library (the reference
peer): handshakes, requests with DATA and trailers, PINGs, resets, window updates.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys
from typing import Dict, List

import h2.config
import h2.connection
import h2.errors
import h2.settings
import hpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from targets import _PREFIXES  # noqa: E402

REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/pkg.Service/Method"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("grpc-timeout", "5S"),
    ("x-trace-bin", "AAEC"),
]


def _message(payload: bytes) -> bytes:
    return struct.pack(">BI", 0, len(payload)) + payload


def client_streams() -> List[bytes]:
    """Client byte streams (preface included) of a few typical conversations."""
    streams = []

    def new() -> h2.connection.H2Connection:
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        c.initiate_connection()
        return c

    # One unary call.
    c = new()
    c.send_headers(1, REQUEST)
    c.send_data(1, _message(b"hello"), end_stream=True)
    streams.append(c.data_to_send())

    # Two calls, one streaming with trailers, a PING, a reset, window updates, settings.
    c = new()
    c.update_settings(
        {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100, h2.settings.SettingCodes.MAX_FRAME_SIZE: 20000}
    )
    c.send_headers(1, REQUEST)
    c.send_data(1, _message(b"a" * 40))
    c.send_data(1, _message(b"b" * 10)[:3])
    c.send_headers(3, [*REQUEST, ("grpc-encoding", "gzip")])
    c.ping(b"12345678")
    c.reset_stream(3, h2.errors.ErrorCodes.CANCEL)
    c.increment_flow_control_window(1000)
    c.increment_flow_control_window(1000, stream_id=1)
    c.send_headers(1, [("x-trailer", "1")], end_stream=True)
    streams.append(c.data_to_send())

    # A request in HEADERS + CONTINUATION, and a GOAWAY.
    c = new()
    c.send_headers(1, [*REQUEST, ("x-big", "v" * 20000)], end_stream=True)
    c.close_connection()
    streams.append(c.data_to_send())
    return streams


def seeds() -> Dict[str, List[bytes]]:
    streams = client_streams()
    preface_len = len(_PREFIXES[1])
    raw = []
    for i, stream in enumerate(streams):
        raw.append(bytes([1, i]) + stream[preface_len:])  # prefix 1: the preface comes from the target
        raw.append(bytes([0 | 4, i + 7]) + stream)  # the client's own preface, small config
    raw.append(bytes([3, 0]) + b"\x00\x00\x00\x06\x00\x00\x00\x00\x00")
    enc = hpack.Encoder()
    blocks = [bytes(enc.encode([(n.encode(), v.encode()) for n, v in REQUEST], huffman=h)) for h in (False, True)]
    hp = [bytes([3, 2]) + bytes([len(b)]) + b for b in blocks[:1]] + [bytes([2, 1, 2]) + b"\x82\x86\x84"]
    messages = [bytes([3, 5]) + _message(b"abc") * 3, bytes([2, 9]) + _message(b"q" * 200)[:50]]
    return {
        "h2_raw": raw,
        "h2_frames": [bytes(range(i, i + 64)) for i in (0, 64, 128)] + [b"\x00\x03" + b"\x01\x00" * 20],
        "hpack": hp,
        "grpc_messages": messages,
        "grpc_request": [b"\x00\x00", b"\x00\x01\x02\x01\x01", b"\x01\x02\x05\x00\x01\x02\x03"],
    }


def main() -> None:
    for target, items in seeds().items():
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for item in items:
            name = hashlib.sha1(item).hexdigest()
            with open(os.path.join(folder, name), "wb") as f:
                f.write(item)
        print(target, len(items))


if __name__ == "__main__":
    main()
