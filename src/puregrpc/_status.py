"""gRPC status codes (grpc/grpc doc/statuscodes.md), mirroring ``grpc.StatusCode``."""

from __future__ import annotations

import enum
import sys
from typing import Any


@enum.unique
class StatusCode(enum.Enum):
    """Same members and values as ``grpc.StatusCode``: ``(int, "lowercase name")``."""

    OK = (0, "ok")
    CANCELLED = (1, "cancelled")
    UNKNOWN = (2, "unknown")
    INVALID_ARGUMENT = (3, "invalid argument")
    DEADLINE_EXCEEDED = (4, "deadline exceeded")
    NOT_FOUND = (5, "not found")
    ALREADY_EXISTS = (6, "already exists")
    PERMISSION_DENIED = (7, "permission denied")
    RESOURCE_EXHAUSTED = (8, "resource exhausted")
    FAILED_PRECONDITION = (9, "failed precondition")
    ABORTED = (10, "aborted")
    OUT_OF_RANGE = (11, "out of range")
    UNIMPLEMENTED = (12, "unimplemented")
    INTERNAL = (13, "internal")
    UNAVAILABLE = (14, "unavailable")
    DATA_LOSS = (15, "data loss")
    UNAUTHENTICATED = (16, "unauthenticated")


_BY_NUMBER = {code.value[0]: code for code in StatusCode}


def status_number(code: Any) -> int:
    """The wire number of a status code: ours, ``grpc.StatusCode`` (duck-typed), or an int.

    Raises ``TypeError`` naming the value when it is none of those.
    """
    if isinstance(code, StatusCode):
        return code.value[0]
    if isinstance(code, int) and not isinstance(code, bool):
        if code in _BY_NUMBER:
            return code
        raise ValueError(f"{code} is not a gRPC status code (0-16)")
    value = getattr(code, "value", None)
    if isinstance(value, tuple) and value and isinstance(value[0], int) and value[0] in _BY_NUMBER:
        return value[0]
    raise TypeError(f"expected a StatusCode, got {code!r}")


def to_status_code(code: Any) -> StatusCode:
    """Normalise a status code from any accepted form to ``puregrpc.StatusCode``."""
    return _BY_NUMBER[status_number(code)]


def from_number(number: int) -> StatusCode:
    return _BY_NUMBER.get(number, StatusCode.UNKNOWN)


def same_kind(like: Any, code: StatusCode) -> Any:
    """``code`` as a member of ``like``'s enum (e.g. ``grpc.StatusCode``) when that enum has
    a member with the same value; otherwise ``code`` itself."""
    kind = type(like)
    if isinstance(like, enum.Enum) and kind is not StatusCode:
        for member in kind:
            if member.value == code.value:
                return member
    return code


def grpc_status_code(code: StatusCode) -> Any:
    """grpc's member for ``code`` where grpcio is imported, else ``code`` itself: for
    libraries written for grpcio that compare with ``grpc.StatusCode`` members."""
    grpc = sys.modules.get("grpc")
    members = getattr(grpc, "StatusCode", None)
    if members is None:
        return code
    return getattr(members, code.name, code)
