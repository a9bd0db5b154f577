"""Header blocks (RFC 9113 sections 4.3, 6.2, 6.10, 8): HEADERS and CONTINUATION
frames assembled into blocks, HPACK-decoded, and admitted as a new request (opening a
stream), as trailers (ending one), or refused.

``HeaderBlocks`` is a part of ``H2Connection``, kept apart by concern like
``windows.FlowControl``: its methods work on the connection's attributes, declared
below, so the split costs nothing per frame.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from . import hpack_decoder
from .budgets import Budget
from .errors import ConnectionViolation, ErrorCode
from .events import Event, Headers, RequestHeadersTooLarge, RequestReceived, TrailersReceived
from .frames import FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, U32
from .settings import H2Config
from .stream import ENDED, RESET_BY_PEER, SKIPPED_RANGES_LIMIT, Stream
from .validation import (
    REQUEST_CACHE_ENTRIES,
    REQUEST_CACHE_MAX_BLOCK,
    REQUEST_CACHE_MAX_LIST,
    CachedRequest,
    CachedStart,
    check_more,
    check_request,
    check_trailers,
    over_list_size,
)


class HeaderBlocks:
    """Header block assembly and request admission (a base of ``H2Connection``)."""

    # State owned by H2Connection and shared with it.
    config: H2Config
    last_stream_id: int
    _now: float
    _events: List[Event]
    _streams: Dict[int, Stream]
    _recent: Dict[int, int]
    _skipped: List[Tuple[int, int]]  # (first, last) stream ids the peer never opened
    _highest_id: int
    _goaway_last: int
    streams_refused: int
    _peer_initial_window: int
    _local_initial_window: int
    _wu_warrants: int
    _reset_budget: Budget
    _decoder: hpack_decoder.Decoder
    _request_cache: Dict[bytes, CachedRequest]
    _start_cache: Dict[Tuple[Tuple[bytes, bytes], ...], CachedStart]
    # Header block being assembled from HEADERS + CONTINUATION frames.
    _hb_sid: int
    _hb_buf: bytearray
    _hb_end_stream: bool
    _hb_self_dep: bool
    _hb_frames: int

    def _stream_error(self, sid: int, code: ErrorCode, report: bool = True, charge: bool = True) -> None:
        raise NotImplementedError  # H2Connection's

    def _charge_useless(self, what: str) -> None:
        raise NotImplementedError  # H2Connection's

    def _close(self, st: Stream) -> None:
        raise NotImplementedError  # H2Connection's

    # HEADERS (RFC 9113 6.2)
    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & (FLAG_PADDED | FLAG_PRIORITY):
            start = 0
            stop = len(payload)
            if flags & FLAG_PADDED:
                if stop == 0:
                    raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for padding")
                stop -= payload[0]
                start = 1
            self_dep = False
            if flags & FLAG_PRIORITY:
                if len(payload) < start + 5:
                    raise ConnectionViolation(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for priority")
                dep = U32.unpack_from(payload, start)[0] & 0x7FFFFFFF
                self_dep = dep == sid
                start += 5
            if stop < start:
                raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "HEADERS padding too long")
            fragment = payload[start:stop]
        else:
            fragment = payload
            self_dep = False
        end_stream = bool(flags & FLAG_END_STREAM)
        if flags & FLAG_END_HEADERS:
            self._header_block(sid, fragment, end_stream, self_dep)
            return
        if not fragment:
            self._charge_useless("empty header fragments")
        if len(fragment) > self.config.max_header_block_size:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        self._hb_sid = sid
        self._hb_buf = bytearray(fragment)
        self._hb_end_stream = end_stream
        self._hb_self_dep = self_dep
        self._hb_frames = 0

    # CONTINUATION (RFC 9113 6.10)
    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if not self._hb_sid or sid != self._hb_sid:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "unexpected CONTINUATION")
        self._hb_frames += 1
        if self._hb_frames > self.config.max_continuation_frames:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many CONTINUATION frames")
        buf = self._hb_buf
        buf += payload
        if len(buf) > self.config.max_header_block_size:
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "header block too large")
        if flags & FLAG_END_HEADERS:
            self._hb_sid = 0
            self._hb_buf = bytearray()
            self._header_block(sid, bytes(buf), self._hb_end_stream, self._hb_self_dep)
        elif not payload:
            self._charge_useless("empty header fragments")

    def _decode(self, block: bytes, start: int = 0, list_size: int = 0) -> List[Tuple[bytes, bytes]]:
        """Decode a whole block (or its fields from ``start``, the end of its indexed
        prefix). Raises HeaderListTooLarge (after decoding all of it, so the
        connection can go on) or a connection error for invalid HPACK."""
        try:
            if start:
                return self._decoder.decode_from(block, start, list_size)
            return self._decoder.decode(block)
        except hpack_decoder.HPACKError as exc:
            raise ConnectionViolation(ErrorCode.COMPRESSION_ERROR, f"HPACK decoding failed: {exc}") from None
        finally:
            if self._request_cache and not self._decoder.last_block_read_only:
                self._request_cache.clear()  # cached results may name old table entries

    def _fresh_request(self, block: bytes) -> Tuple[Optional[Tuple[Headers, int, int]], Optional[List[Any]], int]:
        """Decode and check a request block that is not in the request cache: its
        result (as check_request's), and a memo with the number of headers it
        stands for.

        A client that sends a header new on each call (a trace or request id) sends
        blocks that are never the same, but that start with the same indexed fields
        (RFC 7541 6.1). When those fields are a valid request on their own, their
        check is kept by their values (so a change to the dynamic table does not
        lose it) with a memo of their own, and only the fields after them are
        decoded and checked. Bounded as the request cache is: 16 starts a connection,
        each of at most 512 fields, and a valid one's list of at most 4 KiB."""
        start, first = self._decoder.indexed_prefix(block)
        known: Optional[CachedStart] = None
        # One byte a field: a start kept is at most 512 fields, 4 KiB of references.
        if 0 < start < len(block) and start <= REQUEST_CACHE_MAX_BLOCK:
            starts = self._start_cache
            known = starts.get(first)
            if known is None:
                known = (check_request(list(first)), [None])
                if known[0] is None or known[0][1] <= REQUEST_CACHE_MAX_LIST:
                    if len(starts) >= REQUEST_CACHE_ENTRIES:
                        del starts[next(iter(starts))]
                    starts[first] = known
        result: Optional[Tuple[Headers, int, int]]
        memo: Optional[List[Any]] = None
        memo_fields = 0
        if known is not None and known[0] is not None:
            begun = known[0]
            more = self._decode(block, start, begun[1])
            rest = check_more(more)
            if rest is not None:
                result = (begun[0] + rest[0], begun[1] + rest[1], begun[2])
                memo, memo_fields = known[1], len(begun[0])
            else:
                result = check_request([*first, *more])  # the rules that span fields judge
        else:
            result = check_request(self._decode(block))
        if (
            result is not None
            and result[1] <= REQUEST_CACHE_MAX_LIST
            and len(block) <= REQUEST_CACHE_MAX_BLOCK
            and self._decoder.last_block_read_only
        ):
            cache = self._request_cache
            if len(cache) >= REQUEST_CACHE_ENTRIES:
                del cache[next(iter(cache))]
            whole: List[Any] = [None]
            cache[block] = (result, whole)
            if memo is None:
                memo, memo_fields = whole, len(result[0])
        return result, memo, memo_fields

    def _header_block(self, sid: int, block: bytes, end_stream: bool, self_dep: bool) -> None:
        st = self._streams.get(sid)
        if st is not None:
            try:
                raw = self._decode(block)
            except hpack_decoder.HeaderListTooLarge:
                self._stream_error(sid, ErrorCode.ENHANCE_YOUR_CALM)
                return
            if st.remote_closed:
                self._stream_error(sid, ErrorCode.STREAM_CLOSED)
            elif self_dep:
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            elif not end_stream:
                # RFC 9113 8.1: a second header block is trailers, which end the stream.
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            else:
                headers = check_trailers(raw)
                if headers is None:
                    self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
                elif over_list_size(headers, self.config.max_header_list_size):
                    self._stream_error(sid, ErrorCode.ENHANCE_YOUR_CALM)
                elif st.content_length >= 0 and st.received != st.content_length:
                    self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
                else:
                    self._events.append(TrailersReceived(sid, headers))
                    st.remote_closed = True
                    if st.local_closed:
                        self._close(st)
            return
        if not sid & 1:
            raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "even stream id from client")
        if sid <= self._highest_id:
            how = self._recent.get(sid)
            if how is None:
                if self._was_skipped(sid):
                    # RFC 9113 5.1.1: new stream ids must increase.
                    raise ConnectionViolation(ErrorCode.PROTOCOL_ERROR, "stream id not increasing")
                how = ENDED  # opened once, closed, and forgotten since
            if how == ENDED:
                # RFC 9113 5.1, "closed": frames after END_STREAM was received.
                raise ConnectionViolation(ErrorCode.STREAM_CLOSED, f"HEADERS on closed stream {sid}")
            try:
                self._decode(block)  # keep the HPACK table in step
            except hpack_decoder.HeaderListTooLarge:
                pass
            if how == RESET_BY_PEER:
                self._charge_useless("frames on closed streams")
                self._stream_error(sid, ErrorCode.STREAM_CLOSED, report=False, charge=False)
            return
        if sid > self._highest_id + 2:
            self._skip_to(sid)
        self._highest_id = sid
        cached = self._request_cache.get(block)
        if cached is None:
            try:
                result, memo, memo_fields = self._fresh_request(block)
            except hpack_decoder.HeaderListTooLarge as exc:
                self._oversized_request(sid, exc.size, end_stream)
                return
        else:
            result, memo = cached
            memo_fields = len(result[0])
        if sid > self._goaway_last or len(self._streams) >= self.config.max_concurrent_streams:
            # RFC 9113 5.1.2 / 6.8: refused streams are safe to retry; not reported.
            self.streams_refused += 1
            self._stream_error(sid, ErrorCode.REFUSED_STREAM, report=False)
            return
        if self_dep or result is None:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            return
        headers, size, content_length = result
        if headers:
            headers = list(headers)  # each event owns its list
        if size > self.config.max_header_list_size:
            self._oversized_request(sid, size, end_stream)
            return
        if end_stream and content_length > 0:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)  # RFC 9113 8.1.1
            return
        st = Stream(sid, self._peer_initial_window, self._local_initial_window)
        st.content_length = content_length
        st.remote_closed = end_stream
        self._streams[sid] = st
        self._wu_warrants += 1
        self.last_stream_id = sid
        self._events.append(RequestReceived(sid, headers, end_stream, memo, memo_fields))

    def _oversized_request(self, sid: int, size: int, end_stream: bool) -> None:
        """A request over MAX_HEADER_LIST_SIZE: open the stream so it can be answered
        (gRPC: RESOURCE_EXHAUSTED), and charge it like a reset, so that a peer
        repeating it ends with ENHANCE_YOUR_CALM on the connection."""
        if sid > self._goaway_last or len(self._streams) >= self.config.max_concurrent_streams:
            self.streams_refused += 1
            self._stream_error(sid, ErrorCode.REFUSED_STREAM, report=False)
            return
        if not self._reset_budget.take(self._now):
            raise ConnectionViolation(ErrorCode.ENHANCE_YOUR_CALM, "too many oversized header lists")
        st = Stream(sid, self._peer_initial_window, self._local_initial_window)
        st.remote_closed = end_stream
        self._streams[sid] = st
        self._wu_warrants += 1
        self.last_stream_id = sid
        self._events.append(RequestHeadersTooLarge(sid, size, self.config.max_header_list_size, end_stream))

    def _skip_to(self, sid: int) -> None:
        """The peer uses ``sid``: the idle ids it jumped over are closed (5.1.1)."""
        skipped = self._skipped
        skipped.append((self._highest_id + 1, sid - 1))
        if len(skipped) > SKIPPED_RANGES_LIMIT:
            del skipped[0]

    def _was_skipped(self, sid: int) -> bool:
        """The peer skipped ``sid`` when it opened a higher stream (as far as the
        last SKIPPED_RANGES_LIMIT gaps tell)."""
        return any(first <= sid <= last for first, last in self._skipped)
