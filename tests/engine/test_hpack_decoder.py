"""Our HPACK decoder against RFC 7541 Appendix C and against the hpack library."""

from __future__ import annotations

import random
from typing import List, Tuple

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puregrpc._h2.hpack_decoder import Decoder, HeaderListTooLarge, HPACKError


def _decode_all(decoder: Decoder, blocks: List[str]) -> List[List[Tuple[bytes, bytes]]]:
    return [list(decoder.decode(bytes.fromhex(block.replace(" ", "")))) for block in blocks]


FIRST = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":path", b"/"),
    (b":authority", b"www.example.com"),
]
SECOND = [*FIRST, (b"cache-control", b"no-cache")]
THIRD = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":path", b"/index.html"),
    (b":authority", b"www.example.com"),
    (b"custom-key", b"custom-value"),
]


def test_c2_literal_with_indexing() -> None:
    decoder = Decoder()
    fields = _decode_all(decoder, ["400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"])
    assert fields == [[(b"custom-key", b"custom-header")]]
    assert decoder._table_size == 55


def test_c3_requests_without_huffman() -> None:
    blocks = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]
    decoder = Decoder()
    assert _decode_all(decoder, blocks) == [FIRST, SECOND, THIRD]
    assert decoder._table_size == 164


def test_c4_requests_with_huffman() -> None:
    blocks = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]
    decoder = Decoder()
    assert _decode_all(decoder, blocks) == [FIRST, SECOND, THIRD]
    assert decoder._table_size == 164


def test_c5_responses_with_eviction() -> None:
    blocks = [
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
        " 2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
        " 6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
    ]
    decoder = Decoder(max_table_size=256)
    decoder._max_table_size = 256
    first, second = _decode_all(decoder, blocks)
    assert first == [
        (b":status", b"302"),
        (b"cache-control", b"private"),
        (b"date", b"Mon, 21 Oct 2013 20:13:21 GMT"),
        (b"location", b"https://www.example.com"),
    ]
    assert second == [(b":status", b"307"), *first[1:]]
    assert decoder._table_size == 222  # ":status: 302" was evicted


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.sampled_from([b":path", b"content-type", b"x-custom", b"user-agent", b"te", b"grpc-timeout"])
                | st.binary(min_size=1, max_size=20).map(lambda b: b.hex().encode()),
                st.binary(max_size=100).map(lambda b: b.hex().encode()),  # lengths of 2 bytes too
            ),
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    ),
    st.booleans(),
    st.sampled_from([0, 64, 256, 4096]),
)
def test_matches_the_hpack_library(blocks: list, huffman: bool, table_size: int) -> None:
    encoder = hpack.Encoder()
    encoder.header_table_size = table_size
    ours = Decoder()
    split = Decoder()  # each block as its indexed start and the rest after it
    reference = hpack.Decoder()
    for headers in blocks:
        indexing = [
            hpack.HeaderTuple(n, v) if random.random() < 0.7 else hpack.NeverIndexedHeaderTuple(n, v)
            for n, v in headers
        ]
        block = encoder.encode(indexing, huffman=huffman)
        expected = reference.decode(block, raw=True)
        assert list(ours.decode(block)) == expected
        start, first = split.indexed_prefix(block)
        assert [*first, *split.decode_from(block, start, 0)] == expected


def test_repeated_block_is_cached_only_while_the_table_is_unchanged() -> None:
    decoder = Decoder()
    decoder.decode(bytes.fromhex("4003782d61 0131"))  # inserts x-a: 1 at index 62
    indexed = bytes([0x80 | 62])
    assert decoder.decode(indexed) == [(b"x-a", b"1")]
    assert decoder.decode(indexed) is decoder.decode(indexed)  # served from the cache
    decoder.decode(bytes.fromhex("4003782d62 0132"))  # inserts x-b: 2, now index 62
    assert decoder.decode(indexed) == [(b"x-b", b"2")]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("80", "index 0"),
        ("ff00", "index"),  # dynamic index beyond the table
        ("82 be", "index 62"),  # one byte, beyond the (empty) table
        ("82 bf 00", "index 63"),
        ("41", "truncated"),
        ("4003 6162", "past the end"),
        ("ff ff ff ff ff 7f", "too large"),
        ("82 20", "after a header field"),
        ("3fe21f", "exceeds"),  # size update to 4096+...
        ("0083 ffffff 00", "Huffman"),  # EOS in a Huffman string
    ],
)
def test_malformed_blocks(block: str, message: str) -> None:
    data = bytes.fromhex(block.replace(" ", ""))
    with pytest.raises(HPACKError, match=message):
        Decoder().decode(data)
    split = Decoder()
    start, _ = split.indexed_prefix(data)
    with pytest.raises(HPACKError, match=message):
        split.decode_from(data, start, 0)


def test_header_list_limit() -> None:
    encoder = hpack.Encoder()
    block = encoder.encode([(b"x", b"y" * 100)] * 5)
    with pytest.raises(HeaderListTooLarge):
        Decoder(max_header_list_size=300).decode(block)


def test_hpack_bomb_is_bounded() -> None:
    """One large table entry referenced many times: tiny block, large list."""
    encoder = hpack.Encoder()
    first = encoder.encode([(b"x-bomb", b"a" * 4000)])
    bomb = bytes([0x80 | 62]) * 1000  # 1000 references to it
    decoder = Decoder(max_header_list_size=16384)
    decoder.decode(first)
    with pytest.raises(HeaderListTooLarge):
        decoder.decode(bomb)
