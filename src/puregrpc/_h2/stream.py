"""Stream state (RFC 9113 section 5.1) as the server side keeps it.

Only streams the peer opens exist (we never push), and the state is kept in the
cheapest form the input loop can test, not as an explicit state machine:

==================  ==============================================================
RFC 9113 state      representation in the connection
==================  ==============================================================
idle                id above the highest the peer used (``_highest_id``), or in
                    a range it skipped (``_skipped``; implicitly closed, 5.1.1)
open                ``Stream`` in ``_streams``, neither side ended
half-closed         ``Stream`` in ``_streams`` with ``remote_closed`` (peer sent
(remote)            END_STREAM) or ``local_closed`` (we wrote END_STREAM):
/ (local)           both still count against MAX_CONCURRENT_STREAMS (5.1.2)
closed              gone from ``_streams``; the last RECENTLY_CLOSED_LIMIT are
                    remembered in ``_recent`` with how they closed
==================  ==============================================================

Transitions: a request HEADERS opens a stream (refused streams go straight to
closed, RESET_BY_US); END_STREAM from the peer sets ``remote_closed``; END_STREAM
written sets ``local_closed``; both set, or any RST_STREAM, closes it. A late frame
on a closed stream is judged by how the stream closed:

==============  ===========================================================
RESET_BY_US     ignored: the peer may have sent it before it saw our reset
RESET_BY_PEER   stream error STREAM_CLOSED (HEADERS, DATA)
ENDED           HEADERS: connection error STREAM_CLOSED; DATA: stream error
forgotten       HEADERS: connection error STREAM_CLOSED (skipped ids:
                PROTOCOL_ERROR); DATA: stream error STREAM_CLOSED
==============  ===========================================================

WINDOW_UPDATE, RST_STREAM and PRIORITY on a closed stream are always allowed.
"""

from __future__ import annotations

from .send_queue import SendQueue

# Stream ids we closed recently, remembered so late frames on them are told apart
# from frames on streams that never existed (RFC 9113 section 5.1, "closed").
RECENTLY_CLOSED_LIMIT = 1024
# How a remembered stream closed, which decides what a late frame on it means.
RESET_BY_US = 1  # frames the peer sent before it saw our RST_STREAM are ignored (5.1)
RESET_BY_PEER = 2  # frames after the peer's own RST_STREAM: stream error STREAM_CLOSED
ENDED = 3  # both sides sent END_STREAM: HEADERS is a connection error STREAM_CLOSED
# Ranges of stream ids the peer skipped (never opened), remembered so that a late
# HEADERS on one is told apart from one on a closed stream we forgot.
SKIPPED_RANGES_LIMIT = 64


class Stream:
    """One open or half-closed stream: its windows, its queued output, and what was
    received on it."""

    __slots__ = (
        "content_length",
        "end_queued",
        "local_closed",
        "pending",
        "pending_end",
        "received",
        "recv_grown",
        "recv_unacked",
        "recv_window",
        "remote_closed",
        "send_window",
        "stream_id",
        "trailers",
        "trailers_end",
    )

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unacked = 0
        self.recv_grown = 0  # receive window granted beyond the initial one
        self.remote_closed = False
        self.local_closed = False  # END_STREAM written to the output
        self.end_queued = False  # END_STREAM requested by the application
        self.pending: SendQueue | None = None  # DATA waiting for window
        self.pending_end = False
        self.trailers: bytes | None = None  # header block queued behind pending
        self.trailers_end = False
        self.content_length = -1
        self.received = 0

    @property
    def state(self) -> str:
        """The RFC 9113 name of the state (for diagnostics and tests)."""
        if self.remote_closed:
            return "closed" if self.local_closed else "half-closed (remote)"
        return "half-closed (local)" if self.local_closed else "open"
