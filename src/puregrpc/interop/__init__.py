"""The official gRPC interop server (``grpc.testing.TestService``) on puregrpc.

``python -m puregrpc.interop --port N`` serves it as the official interop
servers do, so any official interop client can be pointed at it.
``add_test_service()`` does the same from code (the test suite uses it). The
schema is built in code (``_protos``): no ``.proto`` files or protoc needed.
"""

from __future__ import annotations

from typing import Any, Optional

from .._descriptors import add_servicer
from ._protos import InteropProtos, ProtoNotFound, file_descriptor_protos, file_descriptor_set, load
from ._service import TestServiceServicer


def add_test_service(server: Any, proto_path: Optional[str] = None) -> InteropProtos:
    """Register ``grpc.testing.TestService`` on ``server``; return the loaded protos
    (built in code, or compiled from the ``.proto`` files under ``proto_path``).

    ``UnimplementedService`` is deliberately not registered: calls to it must
    fail with UNIMPLEMENTED, as the ``unimplemented_service`` case checks.
    """
    protos = load(proto_path)
    add_servicer(server, protos.test_service, TestServiceServicer(protos))
    return protos


__all__ = [
    "InteropProtos",
    "ProtoNotFound",
    "TestServiceServicer",
    "add_test_service",
    "file_descriptor_protos",
    "file_descriptor_set",
    "load",
]
