"""Flow control (RFC 9113 sections 5.2 and 6.9): the windows in both directions, and
the DATA queued on each stream until the windows let it go.

``FlowControl`` is a part of ``H2Connection``, kept apart by concern: its methods
work on the connection's own attributes (declared below), so splitting the class
costs no attribute hop and no call on the hot path.

Sending: DATA goes out at once when the stream window, the connection window and
the peer's frame size allow (the common case, one frame); the rest waits on the
stream, and streams that wait only for the connection window are served round robin
in ``_ready``. Receiving: windows reopen as the application acknowledges what it
consumed, batched to one WINDOW_UPDATE per half window.
"""

from __future__ import annotations

from typing import Any, Dict, List

from .budgets import WINDOW_UPDATE_SMALL_FRAME
from .frames import FLAG_END_STREAM, pack_header, write_headers, write_window_update
from .send_queue import SEND_VIEWS, Bytes, SendQueue
from .stream import Stream

MAX_WINDOW = (1 << 31) - 1
DEFAULT_WINDOW = 65535


class FlowControl:
    """Windows and queued DATA of one connection (a base of ``H2Connection``)."""

    # State owned by H2Connection and shared with it.
    _streams: Dict[int, Stream]
    _ready: Dict[int, Stream]  # streams waiting for connection window, round robin
    _out: bytearray
    _chunks: List[Any]
    _terminated: bool
    _sent_since_ping: bool
    _wu_warrants: int
    pending_total: int
    # Sending side.
    _conn_send_window: int
    _peer_max_frame: int
    # Receiving side.
    _conn_recv_window: int
    _conn_unacked: int
    _conn_refill: int
    _stream_refill: int
    _local_initial_window: int

    def _local_end(self, st: Stream) -> None:
        raise NotImplementedError  # H2Connection's: END_STREAM written

    @property
    def outbound_window(self) -> int:
        """The connection send window (may be negative after a SETTINGS change)."""
        return self._conn_send_window

    def stream_send_window(self, stream_id: int) -> int:
        st = self._streams.get(stream_id)
        return st.send_window if st is not None else 0

    def send_data(self, stream_id: int, data: Bytes, end_stream: bool = False) -> int:
        """Queue DATA; it goes out as the stream and connection windows allow. Returns
        the stream's bytes still waiting for window (``pending_bytes``)."""
        st = self._streams.get(stream_id)
        if st is None:
            return 0
        if st.end_queued:
            raise RuntimeError(f"stream {stream_id}: already ended")
        n = len(data)
        pending = st.pending
        if pending is None:
            if n <= st.send_window and n <= self._conn_send_window:
                # Fast path: the windows take it all now.
                self._sent_since_ping = True
                out = self._out
                max_frame = self._peer_max_frame
                if n < SEND_VIEWS and n <= max_frame:
                    self._wu_warrants += 1
                    out += pack_header(n << 8, FLAG_END_STREAM if end_stream else 0, stream_id)
                    out += data
                else:
                    # Large: the frames are views of the caller's bytes, queued in
                    # order after what the output holds so far: data_to_send joins
                    # them (one copy), parts_to_send hands them on as they are.
                    if type(data) is not bytes:
                        data = bytes(data)  # held until then: it must not change
                    chunks = self._chunks
                    if out:
                        chunks.append(bytes(out))
                        out.clear()
                    view = memoryview(data)
                    # Every frame but the last is full and has the same header.
                    last = (n - 1) // max_frame * max_frame
                    head = pack_header(max_frame << 8, 0, stream_id)
                    chunks += [
                        part for start in range(0, last, max_frame) for part in (head, view[start : start + max_frame])
                    ]
                    chunks.append(pack_header((n - last) << 8, FLAG_END_STREAM if end_stream else 0, stream_id))
                    chunks.append(view[last:])
                    self._wu_warrants += last // max_frame + 1
                st.send_window -= n
                self._conn_send_window -= n
                if end_stream:
                    st.end_queued = True
                    self._local_end(st)
                return 0
            pending = st.pending = SendQueue()
        pending.add(data)
        self.pending_total += n
        if end_stream:
            st.pending_end = True
            st.end_queued = True
        self._flush_stream(st)
        return 0 if st.pending is None else len(st.pending)

    def pending_bytes(self, stream_id: int) -> int:
        """DATA bytes queued on a stream and not yet sent for lack of window."""
        st = self._streams.get(stream_id)
        if st is None or st.pending is None:
            return 0
        return len(st.pending)

    def acknowledge_received_data(self, stream_id: int, length: int) -> None:
        """The application consumed ``length`` flow-controlled bytes: reopen windows."""
        if length <= 0 or self._terminated:
            return
        self._refill_connection(length)
        self.acknowledge_stream_data(stream_id, length)

    def acknowledge_connection_data(self, length: int) -> None:
        """Reopen the connection window only (the stream's credit is given separately,
        with ``acknowledge_stream_data``): what one stream holds then never closes the
        window of the others."""
        if length > 0 and not self._terminated:
            self._refill_connection(length)

    def acknowledge_stream_data(self, stream_id: int, length: int) -> None:
        """Reopen one stream's window only (see ``acknowledge_connection_data``)."""
        if length <= 0 or self._terminated:
            return
        st = self._streams.get(stream_id)
        if st is None or st.remote_closed:
            return  # no more DATA can come on it: only the connection window matters
        unacked = st.recv_unacked + length
        if unacked >= self._stream_refill + (st.recv_grown >> 1):
            # Batched: one WINDOW_UPDATE per half window consumed (RFC 9113 6.9).
            increment = min(unacked, MAX_WINDOW - st.recv_window)
            st.recv_unacked = 0
            if increment > 0:
                st.recv_window += increment
                write_window_update(self._out, stream_id, increment)
        else:
            st.recv_unacked = unacked

    def grow_receive_window(self, stream_id: int, size: int) -> None:
        """Raise a stream's receive window to ``size`` bytes (from the initial one): the
        WINDOW_UPDATE for the difference goes out now, later ones per half of ``size``
        consumed. Never lowers it. For a stream whose application takes its data as
        fast as it comes: fewer WINDOW_UPDATEs, and a sender that never waits for one."""
        st = self._streams.get(stream_id)
        if st is None or st.remote_closed or self._terminated:
            return
        extra = size - self._local_initial_window - st.recv_grown
        extra = min(extra, MAX_WINDOW - st.recv_window)
        if extra > 0:
            st.recv_grown += extra
            st.recv_window += extra
            write_window_update(self._out, stream_id, extra)

    @property
    def initial_receive_window(self) -> int:
        """Our SETTINGS_INITIAL_WINDOW_SIZE: each new stream's receive window."""
        return self._local_initial_window

    @property
    def connection_receive_window(self) -> int:
        """Bytes the peer may still send on the connection before our next WINDOW_UPDATE."""
        return self._conn_recv_window

    def _drop_pending(self, st: Stream) -> None:
        """The stream is gone: forget its queued DATA."""
        self._ready.pop(st.stream_id, None)
        if st.pending is not None:
            self.pending_total -= len(st.pending)
            st.pending = None

    def _refill_connection(self, length: int) -> None:
        unacked = self._conn_unacked + length
        # Batched to one WINDOW_UPDATE per half window consumed, and also sent when
        # less than half the window is open to the peer: when the application
        # withholds some streams' credit, what it does give back must not wait.
        if unacked >= self._conn_refill or self._conn_recv_window < self._conn_refill:
            increment = min(unacked, MAX_WINDOW - self._conn_recv_window)
            self._conn_unacked = 0
            if increment > 0:
                self._conn_recv_window += increment
                write_window_update(self._out, 0, increment)
        else:
            self._conn_unacked = unacked

    def _flush_stream(self, st: Stream, one_frame: bool = False) -> None:
        """Send queued DATA (then queued trailers) as windows allow. A stream left
        waiting on the connection window joins the round-robin ``_ready`` queue."""
        pending = st.pending
        assert pending is not None
        out = self._out
        sid = st.stream_id
        sent_end = False
        while pending.size:
            size = pending.size
            if size > st.send_window:
                size = st.send_window
            if size > self._conn_send_window:
                size = self._conn_send_window
            if size > self._peer_max_frame:
                size = self._peer_max_frame
            if size <= 0:
                break
            last = size == pending.size
            sent_end = last and st.pending_end and st.trailers is None
            if last or size >= WINDOW_UPDATE_SMALL_FRAME:
                self._wu_warrants += 1
            out += pack_header(size << 8, FLAG_END_STREAM if sent_end else 0, sid)
            pending.move(size, out, self._chunks)
            self._sent_since_ping = True
            self.pending_total -= size
            st.send_window -= size
            self._conn_send_window -= size
            if one_frame:
                break
        if pending.size:
            if st.send_window > 0:
                self._ready[sid] = st
            return
        st.pending = None
        self._ready.pop(sid, None)
        trailers = st.trailers
        if trailers is not None:
            st.trailers = None
            self._sent_since_ping = True
            write_headers(out, sid, trailers, st.trailers_end, self._peer_max_frame)
            if st.trailers_end:
                self._local_end(st)
        elif st.pending_end:
            if not sent_end:  # queue was empty: END_STREAM on an empty frame
                out += pack_header(0, FLAG_END_STREAM, sid)
            self._local_end(st)

    def _flush_ready(self) -> None:
        """Round robin, one frame per stream per turn, while the connection window
        lasts: no stream starves behind a big one."""
        ready = self._ready
        while ready and self._conn_send_window > 0:
            for sid in list(ready):
                st = ready.pop(sid)
                self._flush_stream(st, one_frame=True)
                if self._conn_send_window <= 0:
                    break
