"""A stateless HPACK encoder (RFC 7541) for the headers the server sends.

Every field is a "literal header field without indexing" (section 6.2.2),
with the name taken from the static table when it is there, and no Huffman
coding. The encoder therefore never touches the dynamic table, so an encoded
block depends only on its header list and can be cached and reused on any
connection. Decoding, which does need the dynamic table, uses the ``hpack``
library.
"""

from __future__ import annotations

from typing import Dict, Iterable, Tuple

# Names of RFC 7541 Appendix A that a gRPC server sends, with their index.
_STATIC_NAMES: Dict[bytes, int] = {
    b":status": 8,
    b"content-type": 31,
    b"date": 33,
    b"server": 54,
    b"content-length": 28,
}

# Fully indexed entries (section 6.1) for the common ":status" values.
_STATIC_FIELDS: Dict[Tuple[bytes, bytes], int] = {
    (b":status", b"200"): 8,
    (b":status", b"204"): 9,
    (b":status", b"206"): 10,
    (b":status", b"304"): 11,
    (b":status", b"400"): 12,
    (b":status", b"404"): 13,
    (b":status", b"500"): 14,
}


def encode_integer(value: int, prefix_bits: int, first_byte: int) -> bytes:
    """Section 5.1: an integer with an N-bit prefix, OR-ed into ``first_byte``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out = bytearray((first_byte | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encode_string(data: bytes) -> bytes:
    return encode_integer(len(data), 7, 0) + data


def encode_headers(headers: Iterable[Tuple[bytes, bytes]]) -> bytes:
    """Encode a header list (lowercase names) into one header block."""
    out = bytearray()
    for name, value in headers:
        index = _STATIC_FIELDS.get((name, value))
        if index is not None:
            out.append(0x80 | index)
            continue
        name_index = _STATIC_NAMES.get(name)
        if name_index is not None:
            out += encode_integer(name_index, 4, 0x00)
        else:
            out.append(0x00)
            out += _encode_string(name)
        out += _encode_string(value)
    return bytes(out)
