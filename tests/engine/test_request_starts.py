"""Request blocks that start with the same indexed fields and differ after them (a
header new on each call, such as a trace id): the engine checks the start once
(RequestReceived.memo and memo_fields), and still judges every request as
check_request judges its whole header list."""

from __future__ import annotations

from typing import List, Tuple

import hpack
from h2_helpers import REQUEST_FIELDS, headers_frame, of_type, raw_server, rsts_of
from hypothesis import given, settings
from hypothesis import strategies as st

from puregrpc._h2.connection import H2Config, H2Connection
from puregrpc._h2.events import RequestReceived
from puregrpc._h2.validation import check_request

Field = Tuple[bytes, bytes]

START = REQUEST_FIELDS
PROTOCOL_ERROR = 0x1


def literal(name: bytes, value: bytes) -> bytes:
    """RFC 7541 6.2.2, a literal without indexing and with a new name, not Huffman
    coded: how grpcio's client sends a metadata item."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def text(fields: List[Field]) -> List[Tuple[str, str]]:
    return [(name.decode(), value.decode()) for name, value in fields]


def warmed() -> Tuple[H2Connection, hpack.Encoder]:
    """A server that has had one request with START (now in its dynamic table)."""
    server = raw_server()
    encoder = hpack.Encoder()
    events = server.receive_data(headers_frame(1, encoder.encode(START), end_stream=True))
    assert of_type(events, RequestReceived)[0].headers == text(START)
    return server, encoder


def test_a_literal_new_on_each_call_shares_the_memo_of_the_start() -> None:
    """grpcio's client: the start as indexed fields, then the per-call item as a
    literal that leaves the table as it was."""
    server, encoder = warmed()
    got: List[RequestReceived] = []
    for i in range(6):
        block = encoder.encode(START) + literal(b"x-request-id", b"%016x" % i)
        got += of_type(server.receive_data(headers_frame(3 + 2 * i, block, end_stream=True)), RequestReceived)
    assert [event.headers for event in got] == [text([*START, (b"x-request-id", b"%016x" % i)]) for i in range(6)]
    assert got[0].memo is not None and all(event.memo is got[0].memo for event in got)
    assert [event.memo_fields for event in got] == [len(START)] * 6


def test_an_indexed_header_new_on_each_call_shares_the_memo_of_the_start() -> None:
    """Go's and Java's clients index every field: each call's trace id enters the
    table, so the start's indices shift from block to block, but its fields do not."""
    server, encoder = warmed()
    got: List[RequestReceived] = []
    starts = set()
    for i in range(6):
        traced = [*START, (b"traceparent", b"00-%032x-%016x-01" % (i, i))]
        block = encoder.encode(traced)
        starts.add(block[: len(START)])
        got += of_type(server.receive_data(headers_frame(3 + 2 * i, block, end_stream=True)), RequestReceived)
        assert got[-1].headers == text(traced)
    assert len(starts) == 6  # the start's bytes differ each time
    assert got[0].memo is not None and all(event.memo is got[0].memo for event in got)
    assert [event.memo_fields for event in got] == [len(START)] * 6


def test_a_start_that_is_not_a_request_is_judged_whole() -> None:
    """Indexed fields without :path are no request on their own: the block is
    judged whole, and a repeat of it is cached whole."""
    server, encoder = warmed()
    pseudo = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"localhost")]
    rest = [(b":path", b"/pkg.Service/Other"), *START[4:]]
    block = encoder.encode(pseudo) + b"".join(literal(name, value) for name, value in rest)
    got = []
    for sid in (3, 5):
        got += of_type(server.receive_data(headers_frame(sid, block, end_stream=True)), RequestReceived)
    assert [event.headers for event in got] == [text([*pseudo, *rest])] * 2
    assert got[0].memo is got[1].memo and got[0].memo_fields == len(START)


# Fields a client might send after the start: well formed, trimmed, or malformed in
# each way RFC 9113 8.2 and 8.3 name.
AFTER_START = st.sampled_from(
    [
        (b"x-a", b"1"),
        (b"x-b", b"two words"),
        (b"x-c", b" padded\t"),
        (b"x-d", b""),
        (b"x-e-bin", b"AAEC"),
        (b"te", b"trailers"),
        (b"te", b"gzip"),
        (b"content-length", b"0"),
        (b"content-length", b"zero"),
        (b"connection", b"close"),
        (b"Upper", b"1"),
        (b"a:b", b"1"),
        (b"a b", b"1"),
        (b"x-\x7f", b"1"),
        (b"x-" + b"long" * 20, b"1"),
        (b":path", b"/pkg.Service/Other"),
        (b":status", b"200"),
        (b"", b"v"),
        (b"x-f", b"a\rb"),
        (b"x-g", b"a\x00b"),
        (b"x-h", b"a\nb"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(AFTER_START, min_size=1, max_size=4))
def test_each_request_is_judged_as_its_whole_list(after: List[Field]) -> None:
    server, encoder = warmed()
    block = encoder.encode(START) + b"".join(literal(name, value) for name, value in after)
    events = server.receive_data(headers_frame(3, block, end_stream=True))
    expected = check_request([*START, *after])
    requests = of_type(events, RequestReceived)
    if expected is None:
        assert requests == []
        assert rsts_of(server.data_to_send()) == [(3, PROTOCOL_ERROR)]
    else:
        assert [event.headers for event in requests] == [expected[0]]
    # te and content-length are judged with the whole list, which is then cached whole.
    apart = expected is not None and not {b"te", b"content-length"} & {name for name, _ in after}
    if apart:
        assert requests[0].memo_fields == len(START)
    # The connection goes on, and the start's memo serves the next request.
    block = encoder.encode(START) + literal(b"x-request-id", b"1")
    again = of_type(server.receive_data(headers_frame(5, block, end_stream=True)), RequestReceived)
    assert again[0].headers == text([*START, (b"x-request-id", b"1")])
    assert again[0].memo_fields == len(START)
    if apart:
        assert again[0].memo is requests[0].memo


def test_the_starts_kept_are_bounded() -> None:
    """A peer that starts every request differently keeps at most 16 starts, and a
    start of more than 512 indexed fields is not kept."""
    server = raw_server(H2Config(max_header_list_size=1 << 16))
    encoder = hpack.Encoder()
    for i in range(40):
        fields = [*START, (b"x-start", b"%d" % i)]
        server.receive_data(headers_frame(1 + 4 * i, encoder.encode(fields), end_stream=True))
        block = encoder.encode(fields) + literal(b"x-request-id", b"%d" % i)
        events = server.receive_data(headers_frame(3 + 4 * i, block, end_stream=True))
        assert of_type(events, RequestReceived)[0].memo_fields == len(fields)
        assert len(server._start_cache) <= 16
    # 600 more :method fields (static index 3): a start no request has, 606 fields long.
    block = encoder.encode(START) + b"\x83" * 600 + literal(b"x-request-id", b"long")
    kept = dict(server._start_cache)
    events = server.receive_data(headers_frame(161, block, end_stream=True))
    assert of_type(events, RequestReceived) == []
    assert rsts_of(server.data_to_send()) == [(161, PROTOCOL_ERROR)]
    assert server._start_cache == kept
