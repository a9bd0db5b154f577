"""HPACK's Huffman code (RFC 7541 5.2 and Appendix B), decoded a byte at a time.

``hpack``'s decoder walks its state table 4 bits at a time in Python: two lookups and
their checks per input byte, 0.4 µs a byte here, paid for every new header value a client
Huffman-codes (a per-call ``traceparent`` is 39 bytes of it). Here the step a state takes
on a whole input byte is derived once from that same table (its two 4-bit steps), the
first time the state is met, so a byte costs one lookup.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE

# (next state, bytes emitted, the code is invalid, the input may end here)
_Step = Tuple[int, bytes, bool, bool]

_STATES = len(HUFFMAN_TABLE) // 16
# Each state's 256 steps, made on first use: at most 256 x 256 small tuples.
_rows: List[Optional[List[_Step]]] = [None] * _STATES


class HuffmanError(ValueError):
    """Not a valid Huffman-coded string (RFC 7541 5.2)."""


def _row(state: int) -> List[_Step]:
    row: List[_Step] = []
    for byte in range(256):
        at = state
        out = bytearray()
        failed = False
        flags = 0
        for nibble in (byte >> 4, byte & 0x0F):
            at, flags, symbol = HUFFMAN_TABLE[at * 16 + nibble]
            if flags & HUFFMAN_FAIL:
                failed = True  # a code not in the table, or EOS inside the string
                break
            if flags & HUFFMAN_EMIT_SYMBOL:
                out.append(symbol)
        row.append((at, bytes(out), failed, bool(flags & HUFFMAN_COMPLETE)))
    return row


def decode_huffman(data: bytes) -> bytes:
    """The bytes a Huffman-coded string stands for; HuffmanError if it is not valid
    (an unknown code, EOS, or padding that is not a prefix of EOS, or longer than 7 bits)."""
    if not data:
        return b""
    rows = _rows
    state = 0
    complete = False
    out: List[bytes] = []
    for byte in data:
        row = rows[state]
        if row is None:
            row = rows[state] = _row(state)
        state, emitted, failed, complete = row[byte]
        if failed:
            raise HuffmanError("invalid Huffman code")
        if emitted:
            out.append(emitted)
    if not complete:
        raise HuffmanError("Huffman string ends inside a code or with invalid padding")
    return b"".join(out)


__all__ = ["HuffmanError", "decode_huffman"]
