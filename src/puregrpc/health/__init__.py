"""Health checking (grpc.health.v1, grpc/grpc doc/health-checking.md), built in.

No grpcio needed::

    from puregrpc.health import add_health_servicer, SERVING, NOT_SERVING
    health = add_health_servicer(server)        # "" (the whole server) is SERVING
    health.set("my.package.MyService", SERVING)

Wired into the lifecycle: when a drain begins (``stop()``, or the first signal
of ``puregrpc.run``) every service turns NOT_SERVING, open Watch streams are
told so, and later ``set()`` calls are ignored (``enter_graceful_shutdown``,
as grpcio-health-checking's servicer). grpcio-health-checking's own
``HealthServicer`` also runs on puregrpc unchanged.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterator, Optional

from .._descriptors import add_servicer
from .._status import StatusCode
from ._proto import SERVICE, SERVICE_NAME, HealthCheckRequest, HealthCheckResponse

UNKNOWN = 0
SERVING = 1
NOT_SERVING = 2
SERVICE_UNKNOWN = 3  # only sent by Watch

OVERALL_HEALTH = ""


class HealthServicer:
    """The Health service: Check and the streaming Watch (grpcio-health-checking's API)."""

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._status: Dict[str, int] = {OVERALL_HEALTH: SERVING}
        self._version = 0  # bumped on every change, so Watch streams notice
        self._shutting_down = False

    # -- state -----------------------------------------------------------------
    def set(self, service: str, status: Any) -> None:
        """Set ``service``'s status (an int or a ``ServingStatus`` value).
        Ignored once a graceful shutdown has begun."""
        with self._lock:
            if self._shutting_down:
                return
            self._status[service] = int(status)
            self._version += 1
            self._lock.notify_all()

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, Watch streams told, later ``set()`` ignored."""
        with self._lock:
            if self._shutting_down:
                return
            for service in self._status:
                self._status[service] = NOT_SERVING
            self._shutting_down = True
            self._version += 1
            self._lock.notify_all()

    def status(self, service: str = OVERALL_HEALTH) -> Optional[int]:
        with self._lock:
            return self._status.get(service)

    # -- the RPCs ----------------------------------------------------------------
    def Check(self, request: Any, context: Any) -> Any:
        with self._lock:
            status = self._status.get(request.service)
        if status is None:
            context.abort(StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return HealthCheckResponse(status=status)

    def Watch(self, request: Any, context: Any) -> Iterator[Any]:
        service = request.service
        wake = self._lock

        def on_done() -> None:
            with wake:
                wake.notify_all()

        context.add_callback(on_done)
        last: Optional[int] = None
        while True:
            with wake:
                while True:
                    if not context.is_active():
                        return
                    status = self._status.get(service, SERVICE_UNKNOWN)
                    if status != last:
                        break
                    wake.wait()
            last = status
            yield HealthCheckResponse(status=status)


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _foreign_handler(servicer: Any) -> Any:
    from .._handlers import (
        method_handlers_generic_handler,
        unary_stream_rpc_method_handler,
        unary_unary_rpc_method_handler,
    )

    parse = HealthCheckRequest.FromString
    return method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Check": unary_unary_rpc_method_handler(servicer.Check, parse, _serialize),
            "Watch": unary_stream_rpc_method_handler(servicer.Watch, parse, _serialize),
        },
    )


def add_health_servicer(server: Any, servicer: Optional[Any] = None) -> Any:
    """Serve health checking on ``server``; return the servicer (to ``set()`` statuses).

    With no ``servicer`` a new ``HealthServicer`` is made. The servicer's
    ``enter_graceful_shutdown`` is registered as a drain listener of a puregrpc
    server. A grpcio-health-checking servicer can be passed too.
    """
    if servicer is None:
        servicer = HealthServicer()
    if isinstance(servicer, HealthServicer):
        add_servicer(server, SERVICE, servicer)
    else:  # e.g. grpcio-health-checking's: it answers with its own message classes
        server.add_generic_rpc_handlers((_foreign_handler(servicer),))
    shutdown = getattr(servicer, "enter_graceful_shutdown", None)
    add_listener = getattr(server, "add_drain_listener", None)
    if shutdown is not None and add_listener is not None:
        add_listener(shutdown)
    return servicer


__all__ = [
    "NOT_SERVING",
    "OVERALL_HEALTH",
    "SERVICE_NAME",
    "SERVICE_UNKNOWN",
    "SERVING",
    "UNKNOWN",
    "HealthCheckRequest",
    "HealthCheckResponse",
    "HealthServicer",
    "add_health_servicer",
]
