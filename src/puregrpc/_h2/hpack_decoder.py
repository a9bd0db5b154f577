"""A fast HPACK decoder (RFC 7541) for request header blocks.

Faster than ``hpack.Decoder`` for what a server sees: it decodes straight to
``(name, value)`` byte pairs with no per-field objects or logging, memoises
Huffman-coded strings (request headers repeat from call to call), and reuses
the whole decoded list of a block seen before when the block left the dynamic
table unchanged both times. The static table and the Huffman code come from
the ``hpack`` package (the data of RFC 7541 Appendices A and B).
"""

from __future__ import annotations

import re
from typing import Dict, List, Tuple

from hpack.table import HeaderTable

from .huffman import decode_huffman

Field = Tuple[bytes, bytes]

_STATIC: Tuple[Field, ...] = tuple(HeaderTable.STATIC_TABLE)
_STATIC_LEN = len(_STATIC)
_ENTRY_OVERHEAD = 32  # RFC 7541 4.1
# Indexed fields of one byte: 1 and an index from 1 to 126 (0 is invalid, 127 means
# more bytes follow).
_ONE_BYTE_INDICES = re.compile(b"[\x81-\xfe]*")

# Bounds of the memo caches, so that a peer cannot grow them.
_HUFFMAN_CACHE_ENTRIES = 512
_HUFFMAN_CACHE_MAX_STRING = 256
_BLOCK_CACHE_ENTRIES = 32
_BLOCK_CACHE_MAX_BLOCK = 1024


class HPACKError(Exception):
    """The block is not valid HPACK: a COMPRESSION_ERROR (RFC 9113 4.3)."""


class HeaderListTooLarge(Exception):
    """The decoded header list passed the size limit (RFC 9113 6.5.2).

    Raised only after the whole block was decoded, so the dynamic table stays in
    step with the peer's encoder and the connection can go on: refusing the one
    stream is enough (RFC 9113 10.5.1). Fields past the limit are not kept, so an
    oversized list (or an HPACK bomb) costs no more memory than the limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"header list of {size} bytes is larger than the limit of {limit}")
        self.size = size
        self.limit = limit


class Decoder:
    """Decodes the header blocks of one connection, in order."""

    def __init__(self, max_table_size: int = 4096, max_header_list_size: int = 1 << 16) -> None:
        self.max_allowed_table_size = max_table_size  # what our SETTINGS allow
        self.max_header_list_size = max_header_list_size
        self._table: List[Field] = []  # newest first
        self._table_size = 0
        self._max_table_size = max_table_size
        self._version = 0  # bumped whenever the dynamic table changes
        self.last_block_read_only = True  # the last decoded block left the table as it was
        self._huffman: Dict[bytes, bytes] = {}
        self._blocks: Dict[bytes, Tuple[int, List[Field]]] = {}
        self._prefixes: Dict[bytes, Tuple[int, Tuple[Field, ...]]] = {}

    def decode(self, block: bytes) -> List[Field]:
        """Decode one complete header block; the caller must not mutate the result."""
        cached = self._blocks.get(block)
        if cached is not None and cached[0] == self._version:
            self.last_block_read_only = True
            return cached[1]
        version = self._version
        self.last_block_read_only = False
        fields = self._decode(block)
        self.last_block_read_only = self._version == version
        if self.last_block_read_only and len(block) <= _BLOCK_CACHE_MAX_BLOCK:
            if len(self._blocks) >= _BLOCK_CACHE_ENTRIES:
                self._blocks.clear()
            self._blocks[block] = (version, fields)
        return fields

    def indexed_prefix(self, block: bytes) -> Tuple[int, Tuple[Field, ...]]:
        """The fields of the block's leading one-byte indexed representations (RFC
        7541 6.1), and the offset where they end. They change nothing, so decoding
        the block is ``decode_from(block, offset, ...)`` after them. A client puts a
        header new on each call (a trace id) after the ones it repeats."""
        start = _ONE_BYTE_INDICES.match(block).end()  # type: ignore[union-attr]  # (it matches b"")
        if not start:
            return 0, ()
        # While the table stands still, the same bytes index the same fields.
        key = block[:start]
        known = self._prefixes.get(key)
        if known is not None and known[0] == self._version:
            return start, known[1]
        table = self._table
        fields: List[Field] = []
        for byte in key:
            index = byte & 0x7F
            if index <= _STATIC_LEN:
                fields.append(_STATIC[index - 1])
            elif index - _STATIC_LEN <= len(table):
                fields.append(table[index - _STATIC_LEN - 1])
            else:
                return 0, ()  # an invalid index: decode reports it
        found = tuple(fields)
        if start <= _BLOCK_CACHE_MAX_BLOCK:
            if len(self._prefixes) >= _BLOCK_CACHE_ENTRIES:
                self._prefixes.clear()
            self._prefixes[key] = (self._version, found)
        return start, found

    def decode_from(self, block: bytes, start: int, list_size: int) -> List[Field]:
        """Decode the block from ``start``, the end of its indexed prefix, whose fields
        count ``list_size`` towards the header list's size (RFC 9113 6.5.2)."""
        version = self._version
        self.last_block_read_only = False
        fields = self._decode(block, start, list_size)
        self.last_block_read_only = self._version == version
        return fields

    def _decode(self, data: bytes, pos: int = 0, list_size: int = 0) -> List[Field]:
        fields: List[Field] = []
        append = fields.append
        end = len(data)
        after_field = pos > 0  # only indexed fields come before a start past 0
        limit = self.max_header_list_size
        while pos < end:
            byte = data[pos]
            if byte & 0x80:  # 6.1 indexed field
                index, pos = _integer(data, pos, 7)
                field = self._field(index)
            elif byte & 0x40:  # 6.2.1 literal with incremental indexing
                field, pos = self._literal(data, pos, 6)
                self._insert(field)
            elif byte & 0x20:  # 6.3 dynamic table size update
                if after_field:
                    raise HPACKError("dynamic table size update after a header field (RFC 7541 4.2)")
                size, pos = _integer(data, pos, 5)
                if size > self.max_allowed_table_size:
                    raise HPACKError(f"table size update to {size} exceeds the allowed {self.max_allowed_table_size}")
                self._max_table_size = size
                self._evict()
                self._version += 1
                continue
            else:  # 6.2.2 without indexing, 6.2.3 never indexed
                field, pos = self._literal(data, pos, 4)
            after_field = True
            list_size += len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
            if list_size <= limit:
                append(field)
        if list_size > limit:
            raise HeaderListTooLarge(list_size, limit)
        return fields

    def _field(self, index: int) -> Field:
        if 0 < index <= _STATIC_LEN:
            return _STATIC[index - 1]
        dynamic = index - _STATIC_LEN - 1
        if index == 0 or dynamic >= len(self._table):
            raise HPACKError(f"invalid table index {index}")
        return self._table[dynamic]

    def _literal(self, data: bytes, pos: int, prefix: int) -> Tuple[Field, int]:
        mask = (1 << prefix) - 1
        index = data[pos] & mask
        if index < mask:  # an index that fits the prefix: most do (5.1)
            pos += 1
        else:
            index, pos = _integer(data, pos, prefix)
        if index:
            name = self._field(index)[0]
        else:
            name, pos = self._string(data, pos)
        value, pos = self._string(data, pos)
        return (name, value), pos

    def _string(self, data: bytes, pos: int) -> Tuple[bytes, int]:
        if pos >= len(data):
            raise HPACKError("truncated string literal")
        huffman = data[pos] & 0x80
        length = data[pos] & 0x7F
        if length < 0x7F:  # a length that fits the prefix (5.1)
            pos += 1
        else:
            length, pos = _integer(data, pos, 7)
        end = pos + length
        if end > len(data):
            raise HPACKError("string literal runs past the end of the block")
        raw = data[pos:end]
        if not huffman:
            return raw, end
        text = self._huffman.get(raw)
        if text is None:
            try:
                text = decode_huffman(raw)
            except Exception as exc:  # invalid code, EOS, or bad padding (RFC 7541 5.2)
                raise HPACKError(f"invalid Huffman string: {exc}") from None
            if length <= _HUFFMAN_CACHE_MAX_STRING:
                if len(self._huffman) >= _HUFFMAN_CACHE_ENTRIES:
                    self._huffman.clear()
                self._huffman[raw] = text
        return text, end

    def _insert(self, field: Field) -> None:
        size = len(field[0]) + len(field[1]) + _ENTRY_OVERHEAD
        self._version += 1
        if size > self._max_table_size:  # 4.4: a too-large entry empties the table
            self._table.clear()
            self._table_size = 0
            return
        self._table.insert(0, field)
        self._table_size += size
        self._evict()

    def _evict(self) -> None:
        table = self._table
        while self._table_size > self._max_table_size:
            name, value = table.pop()
            self._table_size -= len(name) + len(value) + _ENTRY_OVERHEAD


def _integer(data: bytes, pos: int, prefix: int) -> Tuple[int, int]:
    """RFC 7541 5.1: an integer with an N-bit prefix; returns (value, next position)."""
    mask = (1 << prefix) - 1
    value = data[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise HPACKError("truncated integer")
        if shift > 21:  # a fifth continuation byte: beyond any size or index we accept
            raise HPACKError("integer too large")
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


__all__ = ["Decoder", "HPACKError", "HeaderListTooLarge"]
