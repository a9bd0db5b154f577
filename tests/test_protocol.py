"""The gRPC-over-HTTP/2 layer without I/O: validation, timeouts, metadata, framing."""

from __future__ import annotations

import gc
import gzip
import weakref
import zlib
from typing import Any, Callable, List, Tuple

import hpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puregrpc._compression import DecompressionError, MessageTooLarge, compress, decompress
from puregrpc._protocol import (
    LARGE_MESSAGE,
    MessageDecoder,
    ProtocolViolation,
    RequestRejected,
    decode_bin_value,
    decode_message_header,
    encode_message_header,
    encode_metadata,
    extend_request,
    finish_request,
    frame_message,
    parse_request,
    parse_timeout,
    scan_request,
    trailers_block,
    trailers_only_block,
)
from puregrpc._status import StatusCode

GOOD = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/pkg.Svc/Method"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1H", 3600), ("2M", 120), ("3S", 3), ("250m", 0.25), ("7u", 7e-6), ("9n", 9e-9), ("99999999S", 99999999)],
)
def test_timeout_units(value: str, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "S", "1", "123456789S", "1x", "-1S", "1.5S", "\u0661S"])
def test_malformed_timeout(value: str) -> None:
    with pytest.raises(ValueError, match="grpc-timeout"):
        parse_timeout(value)


def test_valid_request() -> None:
    head = parse_request([*GOOD, ("grpc-timeout", "10S"), ("x-user", "a"), ("x-user", "b")])
    assert head.method == "/pkg.Svc/Method"
    assert head.timeout == 10
    assert head.metadata == (("x-user", "a"), ("x-user", "b"))  # duplicates kept in order


@pytest.mark.parametrize("content_type", ["application/grpc+proto", "application/grpc+json", "application/grpc;x=1"])
def test_content_type_variants(content_type: str) -> None:
    headers = [(k, content_type if k == "content-type" else v) for k, v in GOOD]
    assert parse_request(headers).content_type == content_type


@pytest.mark.parametrize(
    ("change", "http_status", "code"),
    [
        ((":method", "GET"), 405, StatusCode.INTERNAL),
        (("content-type", "text/html"), 415, StatusCode.INTERNAL),
        (("te", "gzip"), 400, StatusCode.INTERNAL),
        ((":path", "/no-method"), 200, StatusCode.UNIMPLEMENTED),
        ((":path", "pkg.Svc/Method"), 200, StatusCode.UNIMPLEMENTED),
        (("grpc-timeout", "soon"), 400, StatusCode.INTERNAL),
        (("grpc-encoding", "snappy"), 200, StatusCode.UNIMPLEMENTED),
    ],
)
def test_rejected_requests(change: tuple, http_status: int, code: StatusCode) -> None:
    headers = [(k, v) for k, v in GOOD if k != change[0]] + [change]
    with pytest.raises(RequestRejected) as info:
        parse_request(headers)
    assert (info.value.http_status, info.value.code) == (http_status, code)


def test_missing_content_type_is_415() -> None:
    with pytest.raises(RequestRejected) as info:
        parse_request([h for h in GOOD if h[0] != "content-type"])
    assert info.value.http_status == 415


def test_reserved_headers_are_not_metadata() -> None:
    head = parse_request([*GOOD, ("grpc-accept-encoding", "gzip"), ("user-agent", "ua"), ("grpc-encoding", "gzip")])
    assert head.metadata == (("user-agent", "ua"),)
    assert head.encoding == "gzip"
    assert head.accept_encoding == ("gzip",)


@pytest.mark.parametrize("encoded", ["AAEC/w==", "AAEC/w"])
def test_binary_metadata_with_and_without_padding(encoded: str) -> None:
    assert decode_bin_value(encoded) == b"\x00\x01\x02\xff"
    head = parse_request([*GOOD, ("x-data-bin", encoded)])
    assert head.metadata == (("x-data-bin", b"\x00\x01\x02\xff"),)


def test_bad_binary_metadata_rejected() -> None:
    with pytest.raises(RequestRejected, match="base64"):
        parse_request([*GOOD, ("x-data-bin", "!!!")])


def test_encode_metadata() -> None:
    assert encode_metadata([("k", "v"), ("k-bin", b"\xff\x00")]) == [(b"k", b"v"), (b"k-bin", b"/wA")]
    for bad in [("Upper", "v"), ("key\n", "v"), ("k", "é"), ("k", "a\nb"), ("sp ace", "v")]:
        with pytest.raises(ValueError):
            encode_metadata([bad])
    assert encode_metadata([("grpc-status", "1"), ("te", "x")]) == []  # reserved: dropped, as grpcio


@pytest.mark.parametrize("text", ["plain", "100%", "línea\nnueva", "🙂 emoji", "\t tab"])
def test_grpc_message_round_trip(text: str) -> None:
    encoded = encode_message_header(text)
    assert all(0x20 <= byte <= 0x7E for byte in encoded)
    assert decode_message_header(encoded.decode()) == text


def test_trailers_blocks_decode() -> None:
    trailers = hpack.Decoder().decode(trailers_block(3, "bad ✗", [(b"x-t", b"1")], b"\x08\x03"))
    assert trailers == [
        ("grpc-status", "3"),
        ("grpc-message", "bad %E2%9C%97"),
        ("grpc-status-details-bin", "CAM"),
        ("x-t", "1"),
    ]
    only = dict(hpack.Decoder().decode(trailers_only_block(200, "application/grpc", 12, "nope")))
    assert only[":status"] == "200" and only["grpc-status"] == "12" and only["grpc-message"] == "nope"


def test_decoder_splits_and_packs_messages() -> None:
    stream = frame_message(b"a" * 10) + frame_message(b"") + frame_message(b"bc", compressed=True)
    for chunk in (1, 3, 7, len(stream)):
        decoder = MessageDecoder(100)
        got = []
        for start in range(0, len(stream), chunk):
            got += decoder.feed(stream[start : start + chunk])
        assert got == [(False, b"a" * 10), (False, b""), (True, b"bc")]
        assert not decoder.partial


def test_decoder_limits_declared_length_before_buffering() -> None:
    decoder = MessageDecoder(10)
    with pytest.raises(ProtocolViolation) as info:
        decoder.feed(frame_message(b"x" * 11)[:6])
    assert info.value.code is StatusCode.RESOURCE_EXHAUSTED


def test_decoder_rejects_bad_flag() -> None:
    with pytest.raises(ProtocolViolation) as info:
        MessageDecoder(10).feed(b"\x02\x00\x00\x00\x00")
    assert info.value.code is StatusCode.INTERNAL


def test_decoder_reports_partial_message() -> None:
    decoder = MessageDecoder(10)
    decoder.feed(frame_message(b"abc")[:4])
    assert decoder.partial


@pytest.mark.parametrize("piece", [1, 4, 5, 6, 1000, 16384, 65536, 100_003])
def test_decoder_collects_a_large_message_in_pieces(piece: int) -> None:
    """A message of LARGE_MESSAGE bytes or more that a piece does not end is collected
    as its pieces and joined at its end; the messages around it are unaffected."""
    large = bytes(range(256)) * 1024  # 262,144 bytes, past LARGE_MESSAGE
    assert len(large) >= LARGE_MESSAGE
    stream = frame_message(b"before") + frame_message(large, compressed=True) + frame_message(b"after")
    decoder = MessageDecoder(1 << 20)
    got = []
    for start in range(0, len(stream), piece):
        got += decoder.feed(stream[start : start + piece])
    assert got == [(False, b"before"), (True, large), (False, b"after")]
    assert not decoder.partial and decoder.buffered == 0 and decoder.missing == 0


def test_decoder_counts_a_large_message_being_collected() -> None:
    large = b"L" * (LARGE_MESSAGE * 2)
    framed = frame_message(large)
    decoder = MessageDecoder(1 << 20)
    assert decoder.feed(framed[:1000]) == []
    assert decoder.partial and decoder.buffered == 1000 and decoder.missing == len(framed) - 1000
    assert decoder.feed(framed[1000:50_000]) == []
    assert decoder.buffered == 50_000 and decoder.missing == len(framed) - 50_000
    decoder.clear()
    assert not decoder.partial and decoder.buffered == 0 and decoder.missing == 0
    # After clear(), a new message decodes from scratch.
    assert decoder.feed(frame_message(b"next")) == [(False, b"next")]


def test_decoder_limit_applies_before_collecting_a_large_message() -> None:
    decoder = MessageDecoder(LARGE_MESSAGE)
    with pytest.raises(ProtocolViolation) as info:
        decoder.feed(frame_message(b"x" * (LARGE_MESSAGE + 1))[:100])
    assert info.value.code is StatusCode.RESOURCE_EXHAUSTED
    assert not decoder.partial


class ReadBuffer(bytearray):
    """A read's bytes, as a buffer the test can watch (bytes takes no weak reference)."""


def read_pieces(stream: bytes, read: int, piece: int) -> List[Tuple[weakref.ref[ReadBuffer], List[memoryview]]]:
    """``stream`` as the engine reports a long run: each read its own buffer, cut in
    ``piece``-byte views (frames' payloads) of it."""
    out = []
    for start in range(0, len(stream), read):
        buffer = ReadBuffer(stream[start : start + read])
        view = memoryview(buffer)
        out.append((weakref.ref(buffer), [view[i : i + piece] for i in range(0, len(buffer), piece)]))
    return out


@pytest.mark.parametrize(("read", "piece"), [(5, 1), (100, 7), (65536, 16384), (262_144, 16384), (300_000, 100_000)])
def test_decoder_pieces_give_what_bytes_give(read: int, piece: int) -> None:
    """feed_pieces (views, kept where they cover their read) and feed (bytes) decode
    the same messages, small and large, across any cut; what comes out is bytes."""
    large = bytes(range(256)) * 1024
    small = [frame_message(bytes([n]) * 100) for n in range(50)]
    stream = (
        frame_message(b"before")
        + frame_message(large, compressed=True)
        + b"".join(small)
        + frame_message(large[::-1])
        + frame_message(b"after")
    )
    expected = MessageDecoder(1 << 20).feed(stream)
    assert len(expected) == 54
    decoder = MessageDecoder(1 << 20)
    got = []
    for _, pieces in read_pieces(stream, read, piece):
        got += decoder.feed_pieces(pieces)
    assert all(type(payload) is bytes for _, payload in got)
    assert got == expected
    assert not decoder.partial and decoder.buffered == 0


def test_decoder_pins_a_read_only_where_its_views_cover_half_of_it() -> None:
    """A large message's views are kept (not copied) where they cover at least half of
    their read; a few bytes kept of a read are copied, so that read is not pinned."""
    large = b"L" * (4 * LARGE_MESSAGE)
    framed = frame_message(large)
    small = b"s" * (16384 - 5)  # each framed small message is one whole piece
    stream = frame_message(small) * 3 + framed
    cut = 3 * 16384 + 100  # the first read ends 100 bytes into the framed large message
    decoder = MessageDecoder(1 << 20)
    ((first, pieces),) = read_pieces(stream[:cut], cut, 16384)
    assert decoder.feed_pieces(pieces) == [(False, small)] * 3
    del pieces
    gc.collect()
    assert first() is None, "100 bytes kept pin a 48 KiB read"
    ((second, pieces),) = read_pieces(stream[cut : cut + 65536], 65536, 16384)
    assert decoder.feed_pieces(pieces) == []
    del pieces
    gc.collect()
    assert second() is not None, "a read that is all message was copied, not kept as views"
    assert decoder.buffered == 100 + 65536
    ((third, pieces),) = read_pieces(stream[cut + 65536 :], len(stream), 16384)
    assert decoder.feed_pieces(pieces) == [(False, large)]
    del pieces
    gc.collect()
    assert second() is None and third() is None, "a message decoded still pins its reads"
    assert not decoder.partial


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compression_round_trip(encoding: str) -> None:
    data = b"hello " * 100
    assert decompress(compress(data, encoding), encoding, 10_000) == data


def test_gzip_matches_standard_library() -> None:
    assert decompress(gzip.compress(b"abc"), "gzip", 10) == b"abc"
    assert decompress(zlib.compress(b"abc"), "deflate", 10) == b"abc"


def test_decompression_bomb_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))
    with pytest.raises(MessageTooLarge):
        decompress(bomb, "gzip", 4 * 1024 * 1024)


def test_corrupt_compressed_data() -> None:
    with pytest.raises(DecompressionError):
        decompress(b"not gzip at all", "gzip", 100)


# Request headers, good and bad, for reading a request in two runs.
REQUEST_HEADERS = st.sampled_from(
    [
        (":method", "POST"),
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/pkg.Svc/Method"),
        (":path", "/bad"),
        ("content-type", "application/grpc"),
        ("content-type", "text/plain"),
        ("te", "trailers"),
        ("grpc-timeout", "5S"),
        ("grpc-timeout", "200m"),
        ("grpc-timeout", "soon"),
        ("grpc-encoding", "gzip"),
        ("grpc-encoding", "zstd-unknown"),
        ("grpc-accept-encoding", "gzip, identity"),
        ("x-a", "1"),
        ("x-a", "2"),
        ("x-b-bin", "AAEC"),
        ("x-b-bin", "!!"),
    ]
)


def outcome(read: Callable[[], Any]) -> Tuple[Any, ...]:
    try:
        head = read()
    except RequestRejected as exc:
        return ("rejected", exc.http_status, exc.code, exc.message)
    fields = (head.method, head.content_type, head.timeout, head.encoding, head.accept_encoding, head.metadata)
    return ("accepted", *fields)


VALID_REQUEST = [
    (":method", "POST"),
    (":path", "/pkg.Svc/Method"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


@settings(max_examples=500, deadline=None)
@given(st.lists(REQUEST_HEADERS, max_size=8), st.permutations(range(12)), st.integers(0, 12))
def test_a_request_read_in_two_runs_reads_as_one(more: List[Tuple[str, str]], order: List[int], cut: int) -> None:
    """The connection keeps the scan of the headers many requests start with and
    reads only the rest of each (RequestReceived.memo_fields)."""
    mixed = [*VALID_REQUEST, *more]
    headers = [mixed[i] for i in order if i < len(mixed)]
    first = scan_request(headers[:cut])
    whole = outcome(lambda: parse_request(headers))
    assert outcome(lambda: finish_request(scan_request(headers[cut:], first))) == whole
    assert outcome(lambda: finish_request(scan_request(headers[cut:], first))) == whole  # first is unchanged
    assert outcome(lambda: finish_request(first)) == outcome(lambda: parse_request(headers[:cut]))


Header = Tuple[str, str]
START_EXTRAS = st.sampled_from(
    [("grpc-timeout", "5S"), ("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip, identity"), ("x-a", "1")]
)
MORE = st.sampled_from(
    [("x-a", "2"), ("x-c", "3"), ("x-b-bin", "AAEC"), ("grpc-timeout", "1S"), ("te", "trailers"), (":path", "/a/b")]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(START_EXTRAS, max_size=4), st.lists(MORE, max_size=4))
def test_metadata_after_a_valid_start_extends_its_head(
    extras: List[Tuple[str, str]], more: List[Tuple[str, str]]
) -> None:
    """extend_request, the short way when only custom metadata follows a valid start."""
    start = [*VALID_REQUEST, *extras]
    extended = extend_request(parse_request(start), more)
    assert (extended is not None) == all(name in ("x-a", "x-c") for name, _ in more)
    if extended is not None:
        assert outcome(lambda: extended) == outcome(lambda: parse_request([*start, *more]))
