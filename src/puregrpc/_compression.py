"""Message compression (grpc/grpc doc/compression.md): identity, gzip, deflate."""

from __future__ import annotations

import enum
import zlib
from typing import Any, Optional


class Compression(enum.IntEnum):
    """Mirrors ``grpc.Compression``."""

    NoCompression = 0
    Deflate = 1
    Gzip = 2


ENCODING_NAMES = {Compression.NoCompression: "identity", Compression.Deflate: "deflate", Compression.Gzip: "gzip"}
SUPPORTED = ("identity", "deflate", "gzip")
ACCEPT_ENCODING = ",".join(SUPPORTED)

# zlib window bits: gRPC's "deflate" is the zlib format (RFC 1950), "gzip" is RFC 1952.
_WBITS = {"deflate": 15, "gzip": 31}


class DecompressionError(Exception):
    pass


class MessageTooLarge(Exception):
    pass


def to_encoding(compression: Any) -> Optional[str]:
    """``grpc.Compression`` / ours / int / None -> encoding name (None = not set)."""
    if compression is None:
        return None
    try:
        return ENCODING_NAMES[Compression(int(compression))]
    except (ValueError, TypeError):
        raise ValueError(f"unknown compression {compression!r}") from None


def compress(data: bytes, encoding: str) -> bytes:
    obj = zlib.compressobj(6, zlib.DEFLATED, _WBITS[encoding])
    return obj.compress(data) + obj.flush()


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """Inflate at most ``limit`` bytes; a larger result raises MessageTooLarge
    (so a small "zip bomb" never becomes a large allocation)."""
    obj = zlib.decompressobj(_WBITS[encoding])
    try:
        out = obj.decompress(data, limit + 1)
        if len(out) > limit:
            raise MessageTooLarge(f"decompressed message larger than {limit} bytes")
        out += obj.flush()
    except zlib.error as exc:
        raise DecompressionError(f"cannot decompress {encoding} message: {exc}") from None
    if len(out) > limit:
        raise MessageTooLarge(f"decompressed message larger than {limit} bytes")
    if not obj.eof:
        raise DecompressionError(f"truncated {encoding} message")
    return out
