"""Method handlers, generic handlers and interceptors, shaped like grpcio's.

grpcio's own objects are accepted wherever these are (duck typing): the server
only reads the attributes named here.
"""

from __future__ import annotations

import abc
import threading
from typing import Any, Callable, Dict, Iterable, NamedTuple, Optional, Sequence, Tuple

Deserializer = Optional[Callable[[bytes], Any]]
Serializer = Optional[Callable[[Any], bytes]]


class RpcMethodHandler(NamedTuple):
    """Same fields as grpcio's ``RpcMethodHandler`` (exactly one behaviour is set)."""

    request_streaming: bool
    response_streaming: bool
    request_deserializer: Deserializer
    response_serializer: Serializer
    unary_unary: Optional[Callable[..., Any]]
    unary_stream: Optional[Callable[..., Any]]
    stream_unary: Optional[Callable[..., Any]]
    stream_stream: Optional[Callable[..., Any]]


def unary_unary_rpc_method_handler(
    behavior: Callable[..., Any], request_deserializer: Deserializer = None, response_serializer: Serializer = None
) -> RpcMethodHandler:
    return RpcMethodHandler(False, False, request_deserializer, response_serializer, behavior, None, None, None)


def unary_stream_rpc_method_handler(
    behavior: Callable[..., Any], request_deserializer: Deserializer = None, response_serializer: Serializer = None
) -> RpcMethodHandler:
    return RpcMethodHandler(False, True, request_deserializer, response_serializer, None, behavior, None, None)


def stream_unary_rpc_method_handler(
    behavior: Callable[..., Any], request_deserializer: Deserializer = None, response_serializer: Serializer = None
) -> RpcMethodHandler:
    return RpcMethodHandler(True, False, request_deserializer, response_serializer, None, None, behavior, None)


def stream_stream_rpc_method_handler(
    behavior: Callable[..., Any], request_deserializer: Deserializer = None, response_serializer: Serializer = None
) -> RpcMethodHandler:
    return RpcMethodHandler(True, True, request_deserializer, response_serializer, None, None, None, behavior)


class HandlerCallDetails(NamedTuple):
    """What interceptors and generic handlers see of a call (as grpcio's)."""

    method: str
    invocation_metadata: Tuple[Tuple[str, Any], ...]


class GenericRpcHandler(abc.ABC):
    @abc.abstractmethod
    def service(self, handler_call_details: Any) -> Optional[Any]:
        """Return the method handler for the call, or None if not this service's."""


class ServiceRpcHandler(GenericRpcHandler):
    @abc.abstractmethod
    def service_name(self) -> str:
        """The fully qualified service name."""


class ServerInterceptor(abc.ABC):
    @abc.abstractmethod
    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        """Return a method handler (possibly from ``continuation(handler_call_details)``)."""


class _DictionaryGenericHandler(ServiceRpcHandler):
    def __init__(self, service: str, method_handlers: Dict[str, Any]) -> None:
        self._name = service
        self._method_handlers = {f"/{service}/{method}": handler for method, handler in method_handlers.items()}

    def service_name(self) -> str:
        return self._name

    def service(self, handler_call_details: Any) -> Optional[Any]:
        return self._method_handlers.get(handler_call_details.method)


def method_handlers_generic_handler(service: str, method_handlers: Dict[str, Any]) -> ServiceRpcHandler:
    """A generic handler serving ``method_handlers`` (name -> handler) of ``service``."""
    return _DictionaryGenericHandler(service, method_handlers)


def check_method_handler(path: str, handler: Any) -> None:
    """Reject an object that cannot be a method handler, naming the method."""
    for attr in ("request_streaming", "response_streaming", "request_deserializer", "response_serializer"):
        if not hasattr(handler, attr):
            raise TypeError(f"handler for {path} is not an RpcMethodHandler (no {attr!r}): {handler!r}")


class Registry:
    """Registered method handlers (exact paths) and generic handlers, in order."""

    def __init__(self) -> None:
        self.methods: Dict[str, Any] = {}
        self.generic: Tuple[Any, ...] = ()
        self._lock = threading.Lock()  # writers only; readers see whole tuples/dicts

    def add_generic(self, handlers: Iterable[Any]) -> None:
        handlers = tuple(handlers)
        for handler in handlers:
            if not callable(getattr(handler, "service", None)):
                raise TypeError(f"generic RPC handler has no service() method: {handler!r}")
        # Copy-on-write: the dispatching threads read ``generic`` without a lock;
        # the lock keeps two concurrent writers from losing one's handlers.
        with self._lock:
            self.generic = self.generic + handlers

    def add_methods(self, service: str, method_handlers: Dict[str, Any]) -> None:
        for name, handler in method_handlers.items():
            check_method_handler(f"/{service}/{name}", handler)
        with self._lock:
            methods = dict(self.methods)
            for name, handler in method_handlers.items():
                methods[f"/{service}/{name}"] = handler
            self.methods = methods

    def lookup_static(self, method: str) -> Tuple[bool, Optional[Any]]:
        """Look ``method`` up without running user code, where that is possible.

        ``(True, handler)``, or ``(True, None)`` for an unknown method, when only
        registered methods and dictionary-based generic handlers (ours, grpcio's,
        generated code's) had to be asked; ``(False, None)`` when a generic handler
        of another kind must be asked (on a handler thread: it is user code)."""
        handler = self.methods.get(method)
        if handler is not None:
            return True, handler
        for generic in self.generic:
            table = _static_table(generic)
            if table is None:
                return False, None
            handler = table.get(method)
            if handler is not None:
                return True, handler
        return True, None

    def lookup(self, details: HandlerCallDetails) -> Optional[Any]:
        handler = self.methods.get(details.method)
        if handler is not None:
            return handler
        for generic in self.generic:
            handler = generic.service(details)
            if handler is not None:
                return handler
        return None


def _static_table(generic: Any) -> Optional[Dict[str, Any]]:
    """The path -> handler table of a generic handler known to be a plain lookup in
    it (puregrpc's, or grpcio's ``method_handlers_generic_handler``), else None."""
    cls = type(generic)
    if cls is _DictionaryGenericHandler or (
        cls.__name__ == "DictionaryGenericHandler" and cls.__module__ == "grpc._utilities"
    ):
        table = getattr(generic, "_method_handlers", None)
        if isinstance(table, dict):
            return table
    return None


def intercepted_lookup(registry: Registry, interceptors: Sequence[Any], details: HandlerCallDetails) -> Optional[Any]:
    """Run the interceptor chain (first interceptor outermost, as grpcio)."""
    if not interceptors:
        return registry.lookup(details)

    def continuation_at(index: int) -> Callable[[Any], Any]:
        if index == len(interceptors):
            return registry.lookup
        interceptor = interceptors[index]
        following = continuation_at(index + 1)
        return lambda call_details: interceptor.intercept_service(following, call_details)

    return continuation_at(0)(details)
