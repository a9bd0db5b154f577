"""Our byte-at-a-time Huffman decoder against RFC 7541 Appendix C and against the hpack
library's decoder, the reference: the same result for every input, or both refuse it."""

from __future__ import annotations

import random
from typing import Callable, Tuple, Union

import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.huffman_table import decode_huffman as reference_decode
from hypothesis import given, settings
from hypothesis import strategies as st

from puregrpc._h2 import huffman
from puregrpc._h2.huffman import HuffmanError, decode_huffman

ENCODER = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def outcome(decode: Callable[[bytes], bytes], data: bytes) -> Union[Tuple[str, bytes], Tuple[str]]:
    try:
        return ("ok", decode(data))
    except Exception:
        return ("refused",)


@pytest.mark.parametrize(
    ("coded", "text"),
    [
        # RFC 7541 C.4.1 to C.4.3 (request examples with Huffman coding)
        ("f1e3c2e5f23a6ba0ab90f4ff", b"www.example.com"),
        ("a8eb10649cbf", b"no-cache"),
        ("25a849e95ba97d7f", b"custom-key"),
        ("25a849e95bb8e8b4bf", b"custom-value"),
        # C.6.1 (response examples)
        ("6402", b"302"),
        ("aec3771a4b", b"private"),
        ("d07abe941054d444a8200595040b8166e082a62d1bff", b"Mon, 21 Oct 2013 20:13:21 GMT"),
        ("9d29ad171863c78f0b97c8e9ae82ae43d3", b"https://www.example.com"),
        ("", b""),
    ],
)
def test_rfc_7541_examples(coded: str, text: bytes) -> None:
    assert decode_huffman(bytes.fromhex(coded)) == text


def test_every_byte_value_round_trips() -> None:
    every = bytes(range(256))
    assert decode_huffman(ENCODER.encode(every)) == every
    assert decode_huffman(ENCODER.encode(every[::-1] * 3)) == every[::-1] * 3


@pytest.mark.parametrize(
    ("coded", "why"),
    [
        ("ffffffff", "EOS (30 ones) inside the string"),
        ("ff", "8 bits of padding (at most 7 are allowed)"),
        ("f1e3c2e5f23a6ba0ab90f4ff" + "ff", "a whole byte of padding after the last code"),
        ("00", "padding that is not EOS's prefix (zeros)"),
        ("f1e3c2e5f23a6ba0ab90f4", "ends inside a code"),
    ],
)
def test_invalid_strings_are_refused(coded: str, why: str) -> None:
    data = bytes.fromhex(coded)
    with pytest.raises(HuffmanError):
        decode_huffman(data)
    assert outcome(reference_decode, data) == ("refused",), why


def test_agrees_with_hpack_on_random_valid_and_invalid_input() -> None:
    rnd = random.Random(7541)
    for _ in range(2000):
        text = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 80)))
        coded = ENCODER.encode(text)
        assert decode_huffman(coded) == text
    refused = 0
    for _ in range(20000):
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 16)))
        ours = outcome(decode_huffman, data)
        assert ours == outcome(reference_decode, data), data.hex()
        refused += ours == ("refused",)
    assert 0 < refused < 20000  # both kinds were tried


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_agrees_with_hpack_on_any_bytes(data: bytes) -> None:
    assert outcome(decode_huffman, data) == outcome(reference_decode, data)


def test_the_table_is_bounded_whatever_states_are_met() -> None:
    """Every state's row made (as strings crafted to visit them all would): 256 rows of
    256 steps, under 8 MiB, and decoding still agrees with hpack's."""
    tracemalloc = pytest.importorskip("tracemalloc", reason="PyPy has no tracemalloc")
    rows = huffman._rows
    rows[:] = [None] * len(rows)  # forgotten: made again below, or on next use
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for state in range(len(rows)):
            rows[state] = huffman._row(state)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(rows) == 256 and all(row is not None and len(row) == 256 for row in rows)
    assert grown < 8 * 2**20, grown
    text = bytes(range(256)) * 2
    assert decode_huffman(ENCODER.encode(text)) == text
