"""``grpc/health/v1/health.proto``, built in code (see ``puregrpc._builtin_protos``)."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2

from .. import _builtin_protos as bp

FILE_NAME = "grpc/health/v1/health.proto"
PACKAGE = "grpc.health.v1"
SERVICE_NAME = f"{PACKAGE}.Health"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    file.options.csharp_namespace = "Grpc.Health.V1"
    file.options.go_package = "google.golang.org/grpc/health/grpc_health_v1"
    file.options.java_multiple_files = True
    file.options.java_outer_classname = "HealthProto"
    file.options.java_package = "io.grpc.health.v1"
    bp.add_message(file, "HealthCheckRequest", [bp.field("service", 1, bp.F.TYPE_STRING)])
    response = bp.add_message(
        file,
        "HealthCheckResponse",
        [bp.field("status", 1, bp.F.TYPE_ENUM, f".{PACKAGE}.HealthCheckResponse.ServingStatus")],
    )
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=number)
    service = file.service.add(name="Health")
    request_type, response_type = (
        f".{PACKAGE}.HealthCheckRequest",
        f".{PACKAGE}.HealthCheckResponse",
    )
    bp.add_method(service, "Check", request_type, response_type)
    bp.add_method(service, "Watch", request_type, response_type, server_streaming=True)
    return file


FILE_DESCRIPTOR_PROTO = _file()
DESCRIPTOR: Any = bp.register(FILE_DESCRIPTOR_PROTO)
SERVICE: Any = DESCRIPTOR.services_by_name["Health"]
HealthCheckRequest: Any = bp.message_class(f"{PACKAGE}.HealthCheckRequest")
HealthCheckResponse: Any = bp.message_class(f"{PACKAGE}.HealthCheckResponse")
