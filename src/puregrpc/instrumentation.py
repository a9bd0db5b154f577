"""OpenTelemetry tracing for puregrpc servers with no code change.

``opentelemetry-instrument python app.py`` finds this instrumentor through the
``opentelemetry_instrumentor`` entry point (as it finds grpcio's), and from then on
every ``puregrpc.server(...)`` gets OpenTelemetry's gRPC server interceptor (from
``opentelemetry-instrumentation-grpc``) in front of its own interceptors, so its
RPCs make the same server spans as grpcio's do.

Explicitly, without the entry point::

    from opentelemetry.instrumentation.grpc import server_interceptor
    server = puregrpc.server(pool, interceptors=[server_interceptor()])

or ``PureGrpcInstrumentor().instrument(tracer_provider=...)`` before servers are
made. Needs ``opentelemetry-instrumentation`` and ``opentelemetry-instrumentation-grpc``
(which needs grpcio); puregrpc itself never does.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Collection, Optional

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined,unused-ignore]
    BaseInstrumentor,
)

from . import _server

_LOGGER = logging.getLogger("puregrpc")


class PureGrpcInstrumentor(BaseInstrumentor):  # type: ignore[misc,unused-ignore]
    """Adds OpenTelemetry's server interceptor to every ``puregrpc.server()`` made
    while instrumented. ``instrument(tracer_provider=..., filter_=...)`` takes the
    same arguments as opentelemetry-instrumentation-grpc's server instrumentor."""

    _original: Optional[Callable[..., Any]] = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("puregrpc",)

    def _instrument(self, **kwargs: Any) -> None:
        try:
            from opentelemetry.instrumentation.grpc import server_interceptor
        except ImportError as exc:
            _LOGGER.warning("puregrpc servers are not traced: opentelemetry-instrumentation-grpc is missing (%s)", exc)
            return
        if PureGrpcInstrumentor._original is not None:
            return
        original = _server.server
        signature = inspect.signature(original)
        tracer_provider = kwargs.get("tracer_provider")
        filter_ = kwargs.get("filter_")

        @functools.wraps(original)
        def server(*args: Any, **kw: Any) -> Any:
            bound = signature.bind(*args, **kw)
            interceptors = list(bound.arguments.get("interceptors") or ())
            interceptor = server_interceptor(  # type: ignore[no-untyped-call,unused-ignore]
                tracer_provider=tracer_provider, filter_=filter_
            )
            interceptors.insert(0, interceptor)
            bound.arguments["interceptors"] = interceptors
            return original(*bound.args, **bound.kwargs)

        PureGrpcInstrumentor._original = original
        _set_server(server)

    def _uninstrument(self, **kwargs: Any) -> None:
        original = PureGrpcInstrumentor._original
        if original is not None:
            PureGrpcInstrumentor._original = None
            _set_server(original)


def _set_server(factory: Callable[..., Any]) -> None:
    import puregrpc

    _server.server = factory
    puregrpc.server = factory


__all__ = ["PureGrpcInstrumentor"]
