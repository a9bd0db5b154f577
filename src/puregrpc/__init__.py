"""puregrpc: a pure-Python gRPC server, a drop-in for grpcio's ``grpc.server()``.

Change ``grpc.server(...)`` to ``puregrpc.server(...)``; handlers, generated
``*_pb2_grpc.py`` code, interceptors and ``ServicerContext`` work unchanged.
"""

from __future__ import annotations

from ._compression import Compression
from ._context import AbortError, RpcError, ServicerContext
from ._credentials import ServerCredentials, ssl_server_credentials
from ._descriptors import add_servicer, service_handler
from ._handlers import (
    GenericRpcHandler,
    HandlerCallDetails,
    RpcMethodHandler,
    ServerInterceptor,
    ServiceRpcHandler,
    method_handlers_generic_handler,
    stream_stream_rpc_method_handler,
    stream_unary_rpc_method_handler,
    unary_stream_rpc_method_handler,
    unary_unary_rpc_method_handler,
)
from ._run import run
from ._server import Server, server
from ._status import StatusCode

__version__ = "0.1.0"

__all__ = [
    "AbortError",
    "Compression",
    "GenericRpcHandler",
    "HandlerCallDetails",
    "RpcError",
    "RpcMethodHandler",
    "Server",
    "ServerCredentials",
    "ServerInterceptor",
    "ServiceRpcHandler",
    "ServicerContext",
    "StatusCode",
    "add_servicer",
    "method_handlers_generic_handler",
    "run",
    "server",
    "service_handler",
    "ssl_server_credentials",
    "stream_stream_rpc_method_handler",
    "stream_unary_rpc_method_handler",
    "unary_stream_rpc_method_handler",
    "unary_unary_rpc_method_handler",
]
