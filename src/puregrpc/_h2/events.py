"""Events the HTTP/2 engine reports to the layer above.

Plain classes with ``__slots__``: one is made for almost every frame received,
so they are kept as cheap as Python allows.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from .frames import Payload

Headers = List[Tuple[str, str]]


class Event:
    __slots__: Tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(getattr(self, name) == getattr(other, name) for name in self.__slots__)


class RequestReceived(Event):
    """A new stream opened by the peer, with its decoded request header list.

    ``memo``: one list, ``[None]`` at first, shared by the requests of this connection
    whose first ``memo_fields`` headers are the same: those of a header block the
    engine caches (a block that leaves the HPACK table as it was decodes to the same
    headers each time), or the leading indexed fields of blocks that differ after
    them (a header new on each call, such as a trace id). None, with ``memo_fields``
    0, for a block decoded afresh. The layer above may keep in it what it derives
    from those headers alone, to skip deriving it again. It takes no part in
    comparisons."""

    __slots__ = ("stream_id", "headers", "end_stream", "memo", "memo_fields")  # noqa: RUF023 (constructor order)

    def __init__(
        self,
        stream_id: int,
        headers: Headers,
        end_stream: bool,
        memo: Optional[List[Any]] = None,
        memo_fields: int = 0,
    ) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.end_stream = end_stream
        self.memo = memo
        self.memo_fields = memo_fields

    def __eq__(self, other: object) -> bool:
        if type(other) is not RequestReceived:
            return False
        mine = (self.stream_id, self.headers, self.end_stream)
        return mine == (other.stream_id, other.headers, other.end_stream)


class RequestHeadersTooLarge(Event):
    """A request whose header list is larger than our MAX_HEADER_LIST_SIZE. The
    stream is open (so the application can answer it, e.g. with a status) but its
    headers were not kept; only that stream is refused (RFC 9113 10.5.1)."""

    __slots__ = ("stream_id", "size", "limit", "end_stream")  # noqa: RUF023 (constructor order)

    def __init__(self, stream_id: int, size: int, limit: int, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.size = size
        self.limit = limit
        self.end_stream = end_stream


class DataReceived(Event):
    """DATA on an open stream. ``data`` is the payload. A long run of frames
    (``frames.VIEW_RUN``) also gives ``pieces``: the payloads as views of the bytes
    read, for a consumer that keeps or joins them itself; ``data`` then joins them on
    first use. ``flow_length`` counts padding too: acknowledge it
    (``acknowledge_connection_data``, ``acknowledge_stream_data``) once the data is consumed."""

    __slots__ = ("stream_id", "pieces", "flow_length", "end_stream", "_data")  # noqa: RUF023 (constructor order)

    def __init__(self, stream_id: int, data: Payload, flow_length: int, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.pieces: Optional[List[memoryview]]
        self._data: Optional[bytes]
        if isinstance(data, list):
            self.pieces, self._data = data, None
        else:
            self.pieces, self._data = None, data
        self.flow_length = flow_length
        self.end_stream = end_stream

    @property
    def data(self) -> bytes:
        data = self._data
        if data is None:
            data = self._data = b"".join(self.pieces or ())
        return data

    def _fields(self) -> Tuple[int, bytes, int, bool]:
        return (self.stream_id, self.data, self.flow_length, self.end_stream)

    def __repr__(self) -> str:
        return "DataReceived(stream_id={!r}, data={!r}, flow_length={!r}, end_stream={!r})".format(*self._fields())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataReceived) and self._fields() == other._fields()


class TrailersReceived(Event):
    """A trailing header block from the peer; it always ends the stream."""

    __slots__ = ("stream_id", "headers")  # noqa: RUF023 (constructor order)

    def __init__(self, stream_id: int, headers: Headers) -> None:
        self.stream_id = stream_id
        self.headers = headers


class StreamReset(Event):
    """A stream ended abnormally. ``remote`` is True when the peer sent
    RST_STREAM, False when the engine reset it for a stream error (the
    RST_STREAM is already queued)."""

    __slots__ = ("stream_id", "error_code", "remote")  # noqa: RUF023 (constructor order)

    def __init__(self, stream_id: int, error_code: int, remote: bool) -> None:
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote


class WindowUpdated(Event):
    """Send window grew where DATA was waiting for it: on one stream, or on the
    connection or every stream (a SETTINGS_INITIAL_WINDOW_SIZE increase) if
    ``stream_id`` is 0. Not reported while no DATA waits: a streaming peer sends a
    WINDOW_UPDATE or two per message, and nobody is waiting to hear of them."""

    __slots__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class PingAcked(Event):
    """The peer acknowledged a PING we sent."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class GoAwayReceived(Event):
    __slots__ = ("error_code", "last_stream_id", "debug_data")  # noqa: RUF023 (constructor order)

    def __init__(self, error_code: int, last_stream_id: int, debug_data: bytes) -> None:
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.debug_data = debug_data


class ConnectionTerminated(Event):
    """The engine found a connection error and queued GOAWAY: flush and close.
    Every open stream is implicitly reset; no more events follow."""

    __slots__ = ("error_code", "message")

    def __init__(self, error_code: int, message: str) -> None:
        self.error_code = error_code
        self.message = message
