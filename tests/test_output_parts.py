"""How a connection hands its output parts to a transport (``_connection._write_parts``):
before Python 3.12 (``_write_gathered``) runs of small parts joined, each large view
written as itself, all in order; never to a transport that is closing. Over real socket
pairs, and the writes as a transport sees them."""

from __future__ import annotations

import asyncio
import socket
from typing import Any, List

import pytest

from puregrpc._connection import _write_gathered, _write_parts
from puregrpc._h2.send_queue import SEND_VIEWS


class Recording(asyncio.WriteTransport):
    """The transport's side of the contract only: what write() was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: List[Any] = []

    def write(self, data: Any) -> None:
        self.writes.append(data)


def test_small_runs_are_joined_and_large_views_written_as_themselves() -> None:
    large = bytes(range(256)) * (2 * SEND_VIEWS // 256)
    view = memoryview(large)
    parts: List[Any] = [b"head", b"er", view[:SEND_VIEWS], b"mid", view[SEND_VIEWS:], view[:10], b"end"]
    transport = Recording()
    _write_gathered(transport, parts)
    assert [type(w) for w in transport.writes] == [bytes, memoryview, bytes, memoryview, bytes]
    assert transport.writes[1] is parts[2] and transport.writes[3] is parts[4]
    assert transport.writes[0] == b"header" and transport.writes[2] == b"mid"
    assert transport.writes[4] == large[:10] + b"end"
    assert b"".join(transport.writes) == b"".join(parts)


def test_one_trailing_part_is_written_as_it_is_and_a_lone_view_alone() -> None:
    large = b"x" * SEND_VIEWS
    transport = Recording()
    _write_gathered(transport, [memoryview(large), b"tail"])
    assert transport.writes == [memoryview(large), b"tail"]
    transport = Recording()
    _write_gathered(transport, [b"a", memoryview(large)])
    assert transport.writes == [b"a", memoryview(large)]


def test_the_bytes_arrive_in_order_over_a_socket() -> None:
    """The same through asyncio's own socket transport, read back on the other end."""
    large = bytes(range(251)) * 4000
    view = memoryview(large)
    parts: List[Any] = [b"\x00" * 9, view[:300_000], b"\x01" * 9, view[300_000:], b"\x02" * 5, b"\x03" * 5]

    async def run() -> bytes:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        _write_gathered(transport, parts)
        got = bytearray()
        want = sum(len(p) for p in parts)
        while len(got) < want:
            got += await loop.sock_recv(theirs, 1 << 20)
        transport.close()
        theirs.close()
        return bytes(got)

    assert asyncio.run(run()) == b"".join(parts)


@pytest.mark.parametrize("parts", [[b"one"], [b"several", b" parts", b" at once"]], ids=["one", "several"])
def test_a_closing_transport_is_not_written_and_its_socket_is_left_unwatched(parts: List[Any]) -> None:
    """A read error aborts the transport and schedules connection_lost for a later
    callback; a flush in between (a thread's answer, drained in the same loop turn) must
    not reach the transport. On Python 3.12 and 3.13 asyncio's writelines() would register
    the socket for writing after the abort let go of it: a stale registration, found here
    by remove_writer(), that made the next connection given the same descriptor fail
    (ENOENT from epoll) and never be read. Before 3.12 the parts go through write(),
    which drops them itself."""

    async def run() -> bool:
        ours, theirs = socket.socketpair()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        fd = ours.fileno()
        transport.abort()
        written = _write_parts(transport, list(parts))
        await asyncio.sleep(0.01)  # connection_lost runs and closes the socket
        watched = loop.remove_writer(fd)
        theirs.close()
        assert not watched, "the closed socket is still registered for writing"
        return written

    assert asyncio.run(run()) is False


def test_parts_reach_an_open_transport() -> None:
    async def run() -> bytes:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        assert _write_parts(transport, [b"a", b"bc", b"def"]) is True
        got = bytearray()
        while len(got) < 6:
            got += await loop.sock_recv(theirs, 100)
        transport.close()
        theirs.close()
        return bytes(got)

    assert asyncio.run(run()) == b"abcdef"
