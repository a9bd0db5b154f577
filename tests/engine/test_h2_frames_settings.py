"""frames.py writers and settings.py, checked against hyperframe (h2's frame layer)."""

from __future__ import annotations

import struct
from typing import Any, List

import hyperframe.frame as hf
import pytest

from puregrpc._h2 import frames, settings
from puregrpc._h2.errors import ConnectionViolation, ErrorCode


def parse_all(data: bytes) -> List[Any]:
    out = []
    pos = 0
    while pos < len(data):
        frame, length = hf.Frame.parse_frame_header(memoryview(data[pos : pos + 9]))
        frame.parse_body(memoryview(data[pos + 9 : pos + 9 + length]))
        out.append(frame)
        pos += 9 + length
    return out


def test_control_frame_writers() -> None:
    out = bytearray()
    frames.write_window_update(out, 3, 12345)
    frames.write_rst(out, 5, ErrorCode.CANCEL)
    frames.write_goaway(out, 7, ErrorCode.ENHANCE_YOUR_CALM, b"calm")
    frames.write_ping(out, b"12345678", ack=True)
    frames.write_ping(out, b"abcdefgh", ack=False)
    wu, rst, goaway, ack, ping = parse_all(bytes(out))
    assert isinstance(wu, hf.WindowUpdateFrame) and (wu.stream_id, wu.window_increment) == (3, 12345)
    assert isinstance(rst, hf.RstStreamFrame) and (rst.stream_id, rst.error_code) == (5, 0x8)
    assert isinstance(goaway, hf.GoAwayFrame)
    assert (goaway.last_stream_id, goaway.error_code, goaway.additional_data) == (7, 0xB, b"calm")
    assert isinstance(ack, hf.PingFrame) and ack.flags == {"ACK"} and ack.opaque_data == b"12345678"
    assert isinstance(ping, hf.PingFrame) and not ping.flags and ping.opaque_data == b"abcdefgh"


@pytest.mark.parametrize("size", [0, 100, 16384, 16385, 40000])
@pytest.mark.parametrize("end_stream", [False, True])
def test_header_block_is_split_into_continuation_frames(size: int, end_stream: bool) -> None:
    block = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    out = bytearray()
    frames.write_headers(out, 9, block, end_stream, 16384)
    parsed = parse_all(bytes(out))
    assert isinstance(parsed[0], hf.HeadersFrame)
    assert all(isinstance(f, hf.ContinuationFrame) for f in parsed[1:])
    assert len(parsed) == max(1, -(-size // 16384))
    assert all(f.stream_id == 9 for f in parsed)
    assert b"".join(f.data for f in parsed) == block
    assert ("END_STREAM" in parsed[0].flags) == end_stream
    assert ["END_HEADERS" in f.flags for f in parsed] == [False] * (len(parsed) - 1) + [True]


def test_local_settings_payload() -> None:
    config = settings.H2Config(max_concurrent_streams=7, initial_window_size=1000, max_frame_size=20000)
    frame = hf.SettingsFrame(0)
    frame.parse_body(memoryview(settings.local_settings_payload(config)))
    assert frame.settings == {
        hf.SettingsFrame.MAX_CONCURRENT_STREAMS: 7,
        hf.SettingsFrame.INITIAL_WINDOW_SIZE: 1000,
        hf.SettingsFrame.MAX_FRAME_SIZE: 20000,
        hf.SettingsFrame.MAX_HEADER_LIST_SIZE: config.max_header_list_size,
        hf.SettingsFrame.ENABLE_PUSH: 0,
    }
    frame = hf.SettingsFrame(0)
    frame.parse_body(memoryview(settings.local_settings_payload(settings.H2Config(header_table_size=0))))
    assert frame.settings[hf.SettingsFrame.HEADER_TABLE_SIZE] == 0


def payload(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


def test_read_settings_keeps_the_last_value_and_unknown_ids() -> None:
    got = settings.read_settings(payload((0x4, 10), (0x4, 20), (0x5, 16384), (0xF0, 99)))
    assert got == {0x4: 20, 0x5: 16384, 0xF0: 99}
    assert settings.read_settings(b"") == {}


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (payload((0x4, 1 << 31)), ErrorCode.FLOW_CONTROL_ERROR),
        (payload((0x5, 16383)), ErrorCode.PROTOCOL_ERROR),
        (payload((0x5, 1 << 24)), ErrorCode.PROTOCOL_ERROR),
        (payload((0x2, 2)), ErrorCode.PROTOCOL_ERROR),
        (payload((0x8, 2)), ErrorCode.PROTOCOL_ERROR),
        (payload((0x9, 5)), ErrorCode.PROTOCOL_ERROR),
        (payload((0x3, 1))[:5], ErrorCode.FRAME_SIZE_ERROR),
    ],
)
def test_read_settings_refuses_invalid_values(data: bytes, code: ErrorCode) -> None:
    with pytest.raises(ConnectionViolation) as info:
        settings.read_settings(data)
    assert info.value.code == code


@pytest.mark.parametrize(
    "config",
    [
        settings.H2Config(max_frame_size=16383),
        settings.H2Config(max_frame_size=1 << 24),
        settings.H2Config(initial_window_size=1 << 31),
        settings.H2Config(connection_window_size=65534),
    ],
)
def test_check_config_refuses_what_cannot_be_announced(config: settings.H2Config) -> None:
    with pytest.raises(ValueError):
        settings.check_config(config)
    settings.check_config(settings.H2Config())
