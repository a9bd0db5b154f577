"""Internal invariants of ``H2Connection``, checked by
``H2Connection.invariant_violations()`` for tests and fuzzing."""

from __future__ import annotations

from typing import Any, List

from .budgets import WINDOW_UPDATE_CREDIT_MAX
from .stream import RECENTLY_CLOSED_LIMIT, SKIPPED_RANGES_LIMIT
from .windows import DEFAULT_WINDOW, MAX_WINDOW


def violations(conn: Any) -> List[str]:
    """Descriptions of every broken invariant of ``conn``, an ``H2Connection`` (typed
    loosely: importing the connection here would be an import cycle), empty when
    all hold."""
    bad: List[str] = []
    cfg = conn.config
    terminated = conn._terminated
    # Connection windows (RFC 9113 6.9.1: never above 2**31-1). SETTINGS never moves
    # the connection windows, and we never send past the send window, so neither
    # goes below 0; the receive window only does in the frame that ends the
    # connection with FLOW_CONTROL_ERROR.
    if not 0 <= conn._conn_send_window <= MAX_WINDOW:
        bad.append(f"connection send window {conn._conn_send_window} out of [0, 2**31-1]")
    if not (-MAX_WINDOW if terminated else 0) <= conn._conn_recv_window <= MAX_WINDOW:
        bad.append(f"connection receive window {conn._conn_recv_window} out of range")
    if conn._conn_unacked < 0:
        bad.append(f"connection unacknowledged bytes {conn._conn_unacked} < 0")
    # A stream receive window goes negative only when our SETTINGS ACK shrinks
    # it (RFC 9113 6.9.2), by at most the distance from the default window; DATA
    # beyond the window resets the stream at once.
    recv_floor = min(0, cfg.initial_window_size - DEFAULT_WINDOW)
    pending_sum = 0
    for sid, st in conn._streams.items():
        if st.stream_id != sid:
            bad.append(f"stream {st.stream_id} filed under id {sid}")
        if not sid & 1 or sid > conn._highest_id:
            bad.append(f"stream {sid}: not a client stream id at or below {conn._highest_id}")
        if not -MAX_WINDOW <= st.send_window <= MAX_WINDOW:
            bad.append(f"stream {sid}: send window {st.send_window} out of [-(2**31-1), 2**31-1]")
        if not recv_floor <= st.recv_window <= MAX_WINDOW:
            bad.append(f"stream {sid}: receive window {st.recv_window} out of [{recv_floor}, 2**31-1]")
        if st.recv_unacked < 0:
            bad.append(f"stream {sid}: unacknowledged bytes {st.recv_unacked} < 0")
        if st.local_closed and st.remote_closed:
            bad.append(f"stream {sid}: closed in both directions but still in the stream table")
        if st.local_closed and not st.end_queued:
            bad.append(f"stream {sid}: END_STREAM written but not requested")
        if st.local_closed and (st.pending is not None or st.trailers is not None):
            bad.append(f"stream {sid}: output queued after END_STREAM")
        if st.pending is not None:
            if not st.pending:
                bad.append(f"stream {sid}: empty DATA queue left in place")
            pending_sum += len(st.pending)
        elif st.trailers is not None:
            bad.append(f"stream {sid}: header block queued behind no DATA")
        if st.content_length >= 0 and st.received > st.content_length:
            bad.append(f"stream {sid}: {st.received} bytes received past content-length {st.content_length}")
        if sid in conn._recent:
            bad.append(f"stream {sid}: open and remembered as closed")
    if pending_sum != conn.pending_total:
        bad.append(f"pending_total {conn.pending_total} != {pending_sum} queued on the streams")
    for sid, st in conn._ready.items():
        if conn._streams.get(sid) is not st:
            bad.append(f"stream {sid}: waiting for connection window but not open")
        elif not st.pending:
            bad.append(f"stream {sid}: waiting for connection window with nothing queued")
    if len(conn._streams) > cfg.max_concurrent_streams:
        bad.append(f"{len(conn._streams)} streams open, above MAX_CONCURRENT_STREAMS {cfg.max_concurrent_streams}")
    if len(conn._recent) > RECENTLY_CLOSED_LIMIT:
        bad.append(f"{len(conn._recent)} closed streams remembered, above {RECENTLY_CLOSED_LIMIT}")
    if len(conn._skipped) > SKIPPED_RANGES_LIMIT or any(
        not 0 < first <= last < conn._highest_id for first, last in conn._skipped
    ):
        bad.append(f"skipped stream id ranges out of bounds: {conn._skipped[:4]}...")
    if conn.last_stream_id > conn._highest_id:
        bad.append(f"last reported stream {conn.last_stream_id} above highest id seen {conn._highest_id}")
    if conn.pending_total < 0 or conn._queued_control < 0 or conn._pings_outstanding < 0:
        bad.append("negative counter (pending_total, queued control frames or outstanding pings)")
    for name, budget in (
        ("reset", conn._reset_budget),
        ("control frame", conn._control_budget),
        ("useless frame", conn._useless_budget),
    ):
        if budget.tokens > budget.burst:
            bad.append(f"{name} budget holds {budget.tokens} tokens, above its burst {budget.burst}")
    credit = conn._wu_credit
    if not 0 <= credit.credit <= WINDOW_UPDATE_CREDIT_MAX or credit.seen > conn._wu_warrants:
        bad.append(f"WINDOW_UPDATE credit {credit.credit} out of [0, {WINDOW_UPDATE_CREDIT_MAX}]")
    if not conn._hb_sid and conn._hb_buf:
        bad.append("header block bytes left behind with no block in progress")
    if conn._hb_frames > cfg.max_continuation_frames and not terminated:
        bad.append(f"{conn._hb_frames} CONTINUATION frames taken, above {cfg.max_continuation_frames}")
    if terminated:
        if conn._streams or conn._ready or conn.pending_total or conn._inbuf:
            bad.append("terminated connection still holds streams, queued DATA or input")
    elif conn._inbuf and len(conn._inbuf) >= conn._need:
        bad.append(f"{len(conn._inbuf)} input bytes buffered, enough for a frame ({conn._need}) yet unparsed")
    return bad
