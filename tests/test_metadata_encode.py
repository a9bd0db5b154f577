"""``encode_metadata``: a handler's metadata -> response header fields."""

from __future__ import annotations

import base64
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from puregrpc._protocol import encode_metadata

LEGAL_KEY_CHARS = string.digits + string.ascii_lowercase + "_.-"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))

DROPPED = [
    "te",
    "content-type",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "grpc-status",
    "grpc-message",
    "grpc-encoding",
    "grpc-accept-encoding",
    "grpc-timeout",
    "grpc-message-type",
    "grpc-internal-encoding-request",
]


def test_empty() -> None:
    assert encode_metadata(None) == []
    assert encode_metadata(()) == []


def test_plain_and_binary() -> None:
    pairs = [("k", "v"), ("k-bin", b"\xff\x00"), ("text-bin", "\u00e9"), ("raw", b"bytes ok")]
    assert encode_metadata(pairs) == [
        (b"k", b"v"),
        (b"k-bin", b"/wA"),
        (b"text-bin", base64.b64encode("\u00e9".encode()).rstrip(b"=")),
        (b"raw", b"bytes ok"),
    ]


def test_order_and_repeats_kept() -> None:
    pairs = [("a", "1"), ("b", "2"), ("a", "3")]
    assert encode_metadata(pairs) == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]


@pytest.mark.parametrize("key", DROPPED)
def test_reserved_keys_dropped(key: str) -> None:
    assert encode_metadata([("before", "1"), (key, "x"), ("after", "2")]) == [(b"before", b"1"), (b"after", b"2")]


@pytest.mark.parametrize("key", ["grpc-retry-pushback-ms", "grpc-foo", "grpc-status-details-bin", "user-agent", "host"])
def test_other_keys_pass_as_grpcio(key: str) -> None:
    value = b"\x08\x05" if key.endswith("-bin") else "1"
    assert len(encode_metadata([(key, value)])) == 1


@pytest.mark.parametrize(
    "key",
    [
        "key\n",
        "bad\n",
        "\nkey",
        "Upper",
        "UPPER",
        "Content-Type",
        "sp ace",
        "",
        ":path",
        ":status",
        "k:v",
        "k\x00",
        "é",
    ],
)
def test_invalid_key_raises_naming_it(key: str) -> None:
    with pytest.raises(ValueError) as info:
        encode_metadata([("fine", "1"), (key, "v")])
    assert repr(key) in str(info.value)


def test_non_str_key_raises() -> None:
    with pytest.raises(ValueError):
        encode_metadata([(b"k", "v")])  # type: ignore[list-item]


@pytest.mark.parametrize("value", ["v\n", "a\r\nb", "\x00", "\x01", "tab\t", "\x7f", "caf\u00e9", b"v\n", b"\x80"])
def test_invalid_value_raises_naming_key(value: str | bytes) -> None:
    with pytest.raises(ValueError) as info:
        encode_metadata([("x-named", value)])
    assert "'x-named'" in str(info.value)


@pytest.mark.parametrize("value", [None, 5, ["v"]])
def test_non_text_value_raises(value: object) -> None:
    with pytest.raises(ValueError, match="'x-named'"):
        encode_metadata([("x-named", value)])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="'x-named-bin'"):
        encode_metadata([("x-named-bin", value)])  # type: ignore[list-item]


@given(
    key=st.text(LEGAL_KEY_CHARS, min_size=1, max_size=20).filter(lambda k: k not in DROPPED and not k.endswith("-bin")),
    value=st.text(PRINTABLE, max_size=40),
)
def test_legal_pairs_round_trip(key: str, value: str) -> None:
    assert encode_metadata([(key, value)]) == [(key.encode(), value.encode("ascii"))]


@given(
    key=st.text(LEGAL_KEY_CHARS, max_size=10),
    bad=st.characters().filter(lambda c: c not in LEGAL_KEY_CHARS),
    tail=st.text(LEGAL_KEY_CHARS, max_size=10),
)
def test_any_illegal_key_character_raises(key: str, bad: str, tail: str) -> None:
    with pytest.raises(ValueError):
        encode_metadata([(key + bad + tail, "v")])


@given(
    value=st.text(PRINTABLE, max_size=10),
    bad=st.characters().filter(lambda c: not 0x20 <= ord(c) <= 0x7E),
)
def test_any_unprintable_value_character_raises(value: str, bad: str) -> None:
    with pytest.raises(ValueError):
        encode_metadata([("k", value + bad)])


@given(st.binary(max_size=64))
def test_binary_values_any_bytes(raw: bytes) -> None:
    [(key, encoded)] = encode_metadata([("x-bin", raw)])
    assert key == b"x-bin"
    assert b"=" not in encoded
    assert base64.b64decode(encoded + b"=" * (-len(encoded) % 4)) == raw
