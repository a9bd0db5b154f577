"""A stream's DATA waiting for window (``_h2.send_queue``): what goes in comes out, in
order, byte for byte, whatever the pieces and the takes; large bytes leave as views of
themselves, and nothing queued changes when the caller's buffers do."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from puregrpc._h2.send_queue import SEND_VIEWS, Bytes, SendQueue

SIZES = st.one_of(st.integers(0, 300), st.integers(SEND_VIEWS - 2, SEND_VIEWS + 2), st.integers(0, 200_000))
KINDS = st.sampled_from(["bytes", "bytearray", "memoryview"])


def output(out: bytearray, chunks: List[Any]) -> bytes:
    """The connection's output as parts_to_send takes it: the chunks, then ``out``."""
    return b"".join(chunks) + bytes(out)


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), SIZES, KINDS), min_size=1, max_size=30))
def test_what_goes_in_comes_out_in_order(ops: List[Tuple[bool, int, str]]) -> None:
    queue = SendQueue()
    model = bytearray()
    out = bytearray()
    chunks: List[Any] = []
    sent = bytearray()
    counter = 0
    for is_add, size, kind in ops:
        if is_add:
            raw = bytes((counter + i) % 251 for i in range(size)) if size < 1000 else bytes([counter % 251]) * size
            counter += 1
            data: Bytes = raw if kind == "bytes" else bytearray(raw) if kind == "bytearray" else memoryview(raw)
            queue.add(data)
            model += raw
            if isinstance(data, bytearray):
                data[:] = b"\xff" * len(data)  # the caller reuses its buffer: the queue kept a copy
        else:
            take = min(size, queue.size)
            queue.move(take, out, chunks)
            sent += model[:take]
            del model[:take]
        assert len(queue) == len(model)
    assert output(out, chunks) == bytes(sent)
    queue.move(queue.size, out, chunks)
    assert output(out, chunks) == bytes(sent + model)
    assert len(queue) == 0


def test_large_bytes_leave_as_views_of_themselves_small_ones_gathered() -> None:
    queue = SendQueue()
    large = bytes(range(256)) * 1024  # 256 KiB
    for _ in range(100):
        queue.add(b"\x00\x00\x00\x00\x05")  # 100 small pieces: one part, not 100
    queue.add(large)
    queue.add(b"tail")
    assert queue.size == 500 + len(large) + 4
    out = bytearray(b"header")
    chunks: List[Any] = []
    queue.move(500 + 16384, out, chunks)  # the small part, then a frame's worth of views
    assert chunks[0] == b"header" + b"\x00\x00\x00\x00\x05" * 100
    assert isinstance(chunks[1], memoryview) and chunks[1].obj is large and len(chunks[1]) == 16384
    assert not out
    queue.move(queue.size, out, chunks)
    views = [c for c in chunks if isinstance(c, memoryview)]
    assert all(v.obj is large for v in views) and sum(len(v) for v in views) == len(large)
    assert bytes(out) == b"tail"
    assert output(out, chunks) == b"header" + b"\x00\x00\x00\x00\x05" * 100 + large + b"tail"


def test_a_large_bytearray_is_copied_once_and_kept_apart_from_the_caller() -> None:
    queue = SendQueue()
    buffer = bytearray(b"a" * SEND_VIEWS)
    queue.add(buffer)
    buffer[:] = b"b" * SEND_VIEWS
    out = bytearray()
    chunks: List[Any] = []
    queue.move(SEND_VIEWS, out, chunks)
    assert output(out, chunks) == b"a" * SEND_VIEWS


def test_moving_more_than_is_queued_is_refused() -> None:
    queue = SendQueue()
    queue.add(b"abc")
    with pytest.raises(ValueError, match="4 bytes asked of a queue of 3"):
        queue.move(4, bytearray(), [])
    assert queue.size == 3
