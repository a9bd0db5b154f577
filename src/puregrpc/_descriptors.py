"""Services from protobuf descriptors alone: no generated ``*_pb2_grpc.py``, no grpcio.

``service_handler(descriptor, servicer)`` builds the generic handler that
grpcio-tools' ``add_XServicer_to_server`` would, from a
``google.protobuf.descriptor.ServiceDescriptor`` (e.g.
``foo_pb2.DESCRIPTOR.services_by_name["Foo"]``) and an object with one method
per RPC, named as in the ``.proto``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from ._handlers import (
    RpcMethodHandler,
    ServiceRpcHandler,
    method_handlers_generic_handler,
    stream_stream_rpc_method_handler,
    stream_unary_rpc_method_handler,
    unary_stream_rpc_method_handler,
    unary_unary_rpc_method_handler,
)


def _message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory

    get = getattr(message_factory, "GetMessageClass", None)
    if get is not None:
        return get(descriptor)
    return message_factory.MessageFactory().GetPrototype(descriptor)  # protobuf < 4.21


def method_handlers(service_descriptor: Any, servicer: Any) -> Dict[str, RpcMethodHandler]:
    """Method name -> handler for every RPC of the service, bound to ``servicer``."""
    handlers: Dict[str, RpcMethodHandler] = {}
    for method in service_descriptor.methods:
        behavior = getattr(servicer, method.name, None)
        if not callable(behavior):
            raise TypeError(
                f"servicer {type(servicer).__name__} has no method {method.name!r} for {service_descriptor.full_name}"
            )
        request_class = _message_class(method.input_type)
        response_class = _message_class(method.output_type)
        make: Callable[..., RpcMethodHandler]
        if method.client_streaming:
            make = stream_stream_rpc_method_handler if method.server_streaming else stream_unary_rpc_method_handler
        else:
            make = unary_stream_rpc_method_handler if method.server_streaming else unary_unary_rpc_method_handler
        handlers[method.name] = make(behavior, request_class.FromString, response_class.SerializeToString)
    return handlers


def service_handler(service_descriptor: Any, servicer: Any) -> ServiceRpcHandler:
    """A generic handler serving ``servicer`` for the described service."""
    return method_handlers_generic_handler(service_descriptor.full_name, method_handlers(service_descriptor, servicer))


def add_servicer(server: Any, service_descriptor: Any, servicer: Any) -> None:
    """Register ``servicer`` for the described service on ``server`` (as generated code does)."""
    handlers = method_handlers(service_descriptor, servicer)
    server.add_generic_rpc_handlers((method_handlers_generic_handler(service_descriptor.full_name, handlers),))
    add_registered = getattr(server, "add_registered_method_handlers", None)
    if add_registered is not None:
        add_registered(service_descriptor.full_name, handlers)
