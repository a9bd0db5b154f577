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
# Each state's 256 steps, made on first use (1.5 ms a state on a busy 2-core machine).
# Bounded whatever a peer sends: with every state met, 256 rows, 6.5 MiB in all
# (tests/engine/test_huffman.py holds it under 8 MiB).
_rows: List[Optional[List[_Step]]] = [None] * _STATES


class HuffmanError(ValueError):
    """Not a valid Huffman-coded string (RFC 7541 5.2)."""


_ONE = [bytes((symbol,)) for symbol in range(256)]


def _row(state: int) -> List[_Step]:
    """The 256 steps of ``state``: for each byte, its high 4 bits' step, then its low."""
    table = HUFFMAN_TABLE
    row: List[_Step] = []
    for high in range(16):
        middle, flags, symbol = table[state * 16 + high]
        if flags & HUFFMAN_FAIL:  # a code not in the table, or EOS inside the string
            row += [(middle, b"", True, False)] * 16
            continue
        first = _ONE[symbol] if flags & HUFFMAN_EMIT_SYMBOL else b""
        for low in range(16):
            at, flags, symbol = table[middle * 16 + low]
            if flags & HUFFMAN_FAIL:
                row.append((at, b"", True, False))
            elif flags & HUFFMAN_EMIT_SYMBOL:
                row.append((at, first + _ONE[symbol], False, bool(flags & HUFFMAN_COMPLETE)))
            else:
                row.append((at, first, False, bool(flags & HUFFMAN_COMPLETE)))
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
