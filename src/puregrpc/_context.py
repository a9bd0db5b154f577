"""``ServicerContext``: what a handler sees of its RPC (grpcio's interface)."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ._call import CallCore
from ._compression import to_encoding
from ._errors import AbortError, InvalidMetadataError, RpcError
from ._status import StatusCode, grpc_status_code, same_kind, to_status_code

_LOGGER = logging.getLogger("puregrpc")


class _RpcState:
    __slots__ = ("_context",)

    def __init__(self, context: ContextBase) -> None:
        self._context = context

    @property
    def code(self) -> Any:
        """The code set so far (grpc's enum where grpcio is installed), or None."""
        status = self._context._call.code
        return None if status is None else grpc_status_code(status)

    @property
    def details(self) -> Optional[str]:
        return self._context._call.details

    @property
    def client(self) -> str:
        """grpcio's words: "cancelled" once the client cancelled, "closed" once the RPC
        ended otherwise, else "open"."""
        call = self._context._call
        if call.cancelled_by_client:
            return "cancelled"
        return "open" if call.active else "closed"

    @property
    def trailing_metadata(self) -> Tuple[Tuple[str, Any], ...]:
        return self._context._call.trailing_metadata


class ContextBase:
    """What both flavours' contexts share: metadata, status, peer, deadline, compression."""

    def __init__(self, call: CallCore) -> None:
        self._call = call
        # the code object the handler passed, and the StatusCode it became on the wire
        self._code_given: Optional[Tuple[Any, StatusCode]] = None

    # -- the RPC ---------------------------------------------------------------
    def invocation_metadata(self) -> Tuple[Tuple[str, Any], ...]:
        """Request metadata as (key, value) pairs that also have ``.key`` and ``.value``
        (as grpcio's); ``-bin`` values are bytes."""
        return self._call.metadata

    @property
    def _state(self) -> _RpcState:
        """A read-only view shaped like grpcio's private ``_state``, which libraries
        written for grpcio read (py-grpc-prometheus: ``.code``, ``.client``)."""
        return _RpcState(self)

    def peer(self) -> str:
        """The client's address, e.g. ``ipv4:127.0.0.1:50000``."""
        return self._call.link.peer

    def peer_identities(self) -> Optional[List[bytes]]:
        return self._call.link.peer_identities()

    def peer_identity_key(self) -> Optional[str]:
        return self._call.link.peer_identity_key()

    def auth_context(self) -> Dict[str, List[bytes]]:
        return self._call.link.auth_context()

    def time_remaining(self) -> Optional[float]:
        """Seconds until the deadline (never negative), or None without one."""
        deadline = self._call.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    # -- metadata --------------------------------------------------------------
    def set_trailing_metadata(self, trailing_metadata: Sequence[Tuple[str, Any]]) -> None:
        self._call.trailing_metadata = tuple(trailing_metadata)

    def trailing_metadata(self) -> Tuple[Tuple[str, Any], ...]:
        return self._call.trailing_metadata

    # -- status ----------------------------------------------------------------
    def set_code(self, code: Any) -> None:
        self._set_code(code, to_status_code(code))

    def _set_code(self, given: Any, status: StatusCode) -> None:
        self._call.code = status
        self._code_given = (given, status)

    def set_details(self, details: str) -> None:
        self._call.details = details

    def code(self) -> Any:
        """The code set by ``set_code()`` or ``abort()``, as the handler passed it (e.g. a
        ``grpc.StatusCode``, so it compares equal to grpcio's members); None before any."""
        status = self._call.code
        given = self._code_given
        if given is not None and status is given[1]:
            return given[0]
        return status

    def details(self) -> Optional[str]:
        return self._call.details

    # -- compression -----------------------------------------------------------
    def set_compression(self, compression: Any) -> None:
        """Compress this RPC's responses with ``compression``. Ignored (as grpcio) once the
        response headers are out: they announced the encoding the client decodes with."""
        encoding = to_encoding(compression)
        call = self._call
        if call.initial_sent:
            _LOGGER.debug(
                "set_compression(%r) ignored for %s: the response headers were already sent", compression, call.method
            )
            return
        call.set_response_encoding(encoding)

    def disable_next_message_compression(self) -> None:
        self._call.skip_next_compression = True

    # -- shared by both flavours' abort() and send_initial_metadata() -------------
    def _record_abort(self, code: Any, details: str) -> None:
        status = to_status_code(code)
        if status is StatusCode.OK:
            # as grpcio: UNKNOWN, and the details are dropped
            _LOGGER.error("abort() called with StatusCode.OK; returning UNKNOWN")
            status, details = StatusCode.UNKNOWN, ""
            code = same_kind(code, status)
        self._set_code(code, status)
        self._call.details = details
        self._call.aborted = True

    def _send_initial_metadata(self, initial_metadata: Sequence[Tuple[str, Any]]) -> None:
        call = self._call
        already_sent = call.initial_sent
        try:
            call.send_initial_metadata(initial_metadata)
        except ValueError as exc:
            if already_sent:
                raise
            details = f"invalid initial metadata: {exc}"
            _LOGGER.error("%s: %s", call.method, details)
            call.code = StatusCode.INTERNAL
            call.details = details
            call.aborted = True
            raise InvalidMetadataError(details) from None

    def request_compressed(self) -> bool:
        """puregrpc extension (not in grpcio): whether the request message read last
        arrived compressed (its compressed flag set), e.g. for interop's expect_compressed."""
        return self._call.request_compressed


class ServicerContext(ContextBase):
    """Per-RPC context handed to sync handlers; the same methods as ``grpc.ServicerContext``."""

    def is_active(self) -> bool:
        """False once the RPC is cancelled, timed out, or finished."""
        return self._call.active

    def cancel(self) -> None:
        """Cancel the RPC from the server side (the client sees CANCELLED)."""
        self._call.cancel_from_handler()

    def add_callback(self, callback: Callable[[], None]) -> bool:
        """Call ``callback`` when the RPC terminates; False if it already has."""
        return self._call.add_callback(callback)

    def send_initial_metadata(self, initial_metadata: Sequence[Tuple[str, Any]]) -> None:
        """Send the response headers now, with ``initial_metadata``. Invalid metadata (a bad
        key or value) fails the RPC with INTERNAL naming the key, as grpcio, and raises
        (a ``ValueError`` that also ends the handler as ``abort()`` does)."""
        self._send_initial_metadata(initial_metadata)

    def abort(self, code: Any, details: str = "") -> None:
        """End the RPC now with ``code`` and ``details``; raises, never returns.
        OK is not an error status, so an abort with OK ends with UNKNOWN."""
        self._record_abort(code, details)
        raise Exception(self._call.details)

    def abort_with_status(self, status: Any) -> None:
        """Abort with a ``grpc.Status``-like object (code, details, trailing_metadata)."""
        trailing = getattr(status, "trailing_metadata", None)
        if trailing:
            self._call.trailing_metadata = tuple(trailing)
        self.abort(status.code, getattr(status, "details", "") or "")


__all__ = ["AbortError", "ContextBase", "InvalidMetadataError", "RpcError", "ServicerContext"]
