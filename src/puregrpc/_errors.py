"""Exceptions a handler may see or raise; shared by the sync and asyncio flavours."""

from __future__ import annotations

from typing import Optional

from ._status import StatusCode


class RpcError(Exception):
    """Raised into a handler reading requests from a call that has been cancelled."""


class AbortError(Exception):
    """Ends the RPC with the status set on the context (``InvalidMetadataError`` is one).

    ``context.abort()`` itself raises a bare ``Exception``, as grpcio's does: libraries
    written for grpcio (OpenTelemetry's interceptor) tell an abort from a handler's own
    error by ``type(error) is Exception``."""


class InvalidMetadataError(AbortError, ValueError):
    """Raised by ``send_initial_metadata()`` given invalid metadata; the RPC ends with INTERNAL."""


class Stop(Exception):
    """Ends a handler run with a status (or silently, if ``code`` is None). Internal."""

    def __init__(self, code: Optional[StatusCode], details: str = "") -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class IterationError(Exception):
    """Wraps an exception raised by a handler's response iterator. Internal."""
