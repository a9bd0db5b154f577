"""Header field rules of RFC 9113 section 8 for requests and trailers: field names
and values (8.2.1), connection-specific fields (8.2.2), pseudo-headers (8.3.1),
content-length (8.1.1). Pure functions over decoded header lists."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from .events import Headers

# RFC 9113 section 8.2.2: connection-specific fields make a message malformed.
_CONNECTION_HEADERS = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))

# A block that left the decoder's dynamic table unchanged (no insertion, no size
# update) decodes the same way until the table changes, so its validated header
# list is cached by its bytes, and the cache emptied whenever the table changes.
# Bounds of the cache of such blocks (per connection): entries, block bytes, and
# decoded list size, so the cache stays small whatever the peer sends.
REQUEST_CACHE_ENTRIES = 16
REQUEST_CACHE_MAX_BLOCK = 512
REQUEST_CACHE_MAX_LIST = 4096

# A cached request block's validated (headers, list size, content-length), and the memo
# its requests share (RequestReceived.memo).
CachedRequest = Tuple[Tuple[Headers, int, int], List[Any]]
# The same for a run of fields a request starts with, keyed by the fields: None for a
# run that is not a valid request on its own.
CachedStart = Tuple[Optional[Tuple[Headers, int, int]], List[Any]]

# RFC 9113 8.2.1, checked on all names (joined with b" ") or values (joined with
# b"\n") at once, with C-speed bytes operations. Names: only visible ASCII except
# uppercase; a colon only as the first byte of a pseudo-header. Substrings are looked
# for with find, not `in`: CPython's bytes.__contains__ first tries its operand as an
# int, and formats and drops a TypeError, about 1,800 instructions each time.
_NAME_BYTES = bytes(c for c in range(0x21, 0x7F) if not 0x41 <= c <= 0x5A) + b" "


def _fields_ok(names: List[bytes], values: List[bytes], pseudo: int) -> bool:
    """Names and values of one block are well formed (empty names are checked by
    the caller)."""
    joined = b" ".join(names)
    if joined.translate(None, _NAME_BYTES) or joined.count(b" ") != len(names) - 1 or joined.count(b":") != pseudo:
        return False
    # Values: no NUL, CR or LF. Leading or trailing SP/HTAB is checked apart
    # (_padded_values): such values are trimmed, not refused.
    joined = b"\n".join(values)
    return joined.count(b"\n") == len(values) - 1 and joined.find(b"\r") < 0 and joined.find(b"\x00") < 0


def _padded_values(values: List[bytes]) -> bool:
    """Some value has leading or trailing SP or HTAB. RFC 9113 8.2.1 calls that
    malformed, but grpcio's client sends such metadata values and grpcio's server
    serves them, so they are trimmed as HTTP field values are (RFC 9110 5.5)."""
    joined = b"\n".join(values)
    if joined.find(b"\n ") >= 0 or joined.find(b" \n") >= 0 or joined.find(b"\n\t") >= 0 or joined.find(b"\t\n") >= 0:
        return True
    return joined[:1] in (b" ", b"\t") or joined[-1:] in (b" ", b"\t")


def check_request(raw: List[Tuple[bytes, bytes]]) -> Tuple[Headers, int, int] | None:
    """RFC 9113 8.2 and 8.3.1. Returns (headers, list size, content-length or -1),
    or None if the request is malformed."""
    headers: Headers = []
    append = headers.append
    names: List[bytes] = []
    values: List[bytes] = []
    size = 32 * len(raw)
    method = scheme = path = authority = None
    regular = False
    pseudo = 0
    content_length = -1
    for name, value in raw:
        size += len(name) + len(value)
        names.append(name)
        values.append(value)
        if name[:1] == b":":
            if regular:
                return None  # pseudo-header after a regular field
            pseudo += 1
            if name == b":method":
                if method is not None:
                    return None
                method = value
            elif name == b":path":
                if path is not None:
                    return None
                path = value
            elif name == b":scheme":
                if scheme is not None:
                    return None
                scheme = value
            elif name == b":authority":
                if authority is not None:
                    return None
                authority = value
            else:
                return None  # unknown, or a response pseudo-header
        else:
            regular = True
            if not name or name in _CONNECTION_HEADERS:
                return None
            if name == b"te":
                if value != b"trailers":
                    return None
            elif name == b"content-length":
                if not value.isdigit() or (content_length >= 0 and content_length != int(value)):
                    return None
                content_length = int(value)
        append((name.decode("latin-1"), value.decode("latin-1")))
    if not _fields_ok(names, values, pseudo):
        return None
    if _padded_values(values):
        headers = [(name, value.strip(" \t")) for name, value in headers]
    if method is None:
        return None
    if method == b"CONNECT":
        # RFC 9113 8.5: CONNECT carries only :method and :authority.
        if scheme is not None or path is not None or authority is None:
            return None
    elif scheme is None or not path:
        return None
    return headers, size, content_length


# Names check_more has found to be plain regular fields, with their text: a client
# repeats its metadata keys call after call. Bounded: at most 256 names of at most 64
# bytes, process-wide.
_PLAIN_NAMES: Dict[bytes, str] = {}
_PLAIN_NAMES_LIMIT = 256
_PLAIN_NAME_MAX = 64
_REGULAR_NAME_BYTES = _NAME_BYTES.replace(b":", b"").replace(b" ", b"")
_BAD_VALUE = re.compile(rb"[\x00\r\n]")  # RFC 9113 8.2.1


def _plain_name(name: bytes) -> Optional[str]:
    """The name's text if it is a well-formed regular field name that check_more may
    pass on its own (not te, content-length or connection-specific), else None."""
    if not name or name.translate(None, _REGULAR_NAME_BYTES) or name in _CONNECTION_HEADERS:
        return None
    if name == b"te" or name == b"content-length":
        return None
    text = name.decode("latin-1")
    if len(name) <= _PLAIN_NAME_MAX:
        if len(_PLAIN_NAMES) >= _PLAIN_NAMES_LIMIT:
            _PLAIN_NAMES.clear()
        _PLAIN_NAMES[name] = text
    return text


def check_more(raw: List[Tuple[bytes, bytes]]) -> Tuple[Headers, int] | None:
    """The fields after a valid request's first ones (check_request on the first ones
    gave a result): regular fields, checked as check_request checks them. Returns
    (headers, list size), or None where check_request must judge the whole list: a
    malformed field, or a ``te`` or ``content-length`` (checked with the rest)."""
    headers: Headers = []
    size = 32 * len(raw)
    for name, value in raw:
        text = _PLAIN_NAMES.get(name)
        if text is None:
            text = _plain_name(name)
            if text is None:
                return None
        if _BAD_VALUE.search(value) is not None:
            return None
        size += len(name) + len(value)
        headers.append((text, value.strip(b" \t").decode("latin-1")))
    return headers, size


def check_trailers(raw: List[Tuple[bytes, bytes]]) -> Headers | None:
    """RFC 9113 8.1: trailers carry no pseudo-headers."""
    names: List[bytes] = []
    values: List[bytes] = []
    headers: Headers = []
    for name, value in raw:
        if not name or name[:1] == b":" or name in _CONNECTION_HEADERS:
            return None
        if name == b"te" and value != b"trailers":
            return None
        names.append(name)
        values.append(value)
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if raw and not _fields_ok(names, values, 0):
        return None
    if raw and _padded_values(values):
        headers = [(name, value.strip(" \t")) for name, value in headers]
    return headers


def over_list_size(headers: Headers, limit: int) -> bool:
    size = 0
    for name, value in headers:
        size += len(name) + len(value) + 32
    return size > limit
