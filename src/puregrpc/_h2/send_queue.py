"""The DATA a stream holds while it waits for flow-control window (RFC 9113 6.9).

Large pieces stay views of the bytes the application gave (``SEND_VIEWS`` bytes or
more), so a large message held back by a small window is still copied once in Python,
when the output is joined, or not at all where the writer sends the parts as they are.
Small pieces are gathered into one bytearray: a queue of many small messages stays a
few parts, not one per message.
"""

from __future__ import annotations

import collections
from typing import Any, Deque, List, Union

Bytes = Union[bytes, bytearray, memoryview]

# DATA of this many bytes or more is kept as views of the caller's bytes and joined once
# into the output, not copied into the output buffer first: a peer that allows large
# frames (grpc's clients allow 16 MiB) would otherwise cost a large message two copies
# in Python, and a small window three.
SEND_VIEWS = 32 * 1024


class SendQueue:
    """A stream's queued DATA: ``size`` bytes, taken from the front as window allows."""

    __slots__ = ("_parts", "size")

    def __init__(self) -> None:
        self._parts: Deque[Union[bytearray, memoryview]] = collections.deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, data: Bytes) -> None:
        """Queue ``data`` after what is queued (a large bytearray or memoryview is
        copied first: it could change before it is sent)."""
        n = len(data)
        if not n:
            return
        parts = self._parts
        if n >= SEND_VIEWS:
            parts.append(memoryview(data if type(data) is bytes else bytes(data)))
        elif parts and type(parts[-1]) is bytearray:
            parts[-1] += data
        else:
            parts.append(bytearray(data))
        self.size += n

    def move(self, size: int, out: bytearray, chunks: List[Any]) -> None:
        """Move the first ``size`` bytes to the connection's output: small parts are
        copied onto ``out``; a view is appended to ``chunks`` after ``out``'s bytes so
        far (the output is ``chunks`` then ``out``, see ``H2Connection.parts_to_send``)."""
        if size > self.size:
            raise ValueError(f"{size} bytes asked of a queue of {self.size}")
        self.size -= size
        parts = self._parts
        while size:
            part = parts[0]
            n = len(part)
            if type(part) is bytearray:
                if n <= size:
                    out += part
                    parts.popleft()
                else:
                    # Through a view (a slice of the bytearray would be a copy); released
                    # before the bytearray shrinks, which it may not while a view exists.
                    with memoryview(part) as view, view[:size] as head:
                        out += head
                    del part[:size]
                    n = size
            else:
                if out:
                    chunks.append(bytes(out))
                    out.clear()
                if n <= size:
                    chunks.append(part)
                    parts.popleft()
                else:
                    chunks.append(part[:size])
                    parts[0] = part[size:]
                    n = size
            size -= n
