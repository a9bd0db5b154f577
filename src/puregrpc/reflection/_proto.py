"""``grpc/reflection/v1/reflection.proto`` and its v1alpha twin, built in code."""

from __future__ import annotations

from typing import Any, Dict

from google.protobuf import descriptor_pb2

from .. import _builtin_protos as bp

F = bp.F
PACKAGES = ("grpc.reflection.v1", "grpc.reflection.v1alpha")


def _file(package: str) -> descriptor_pb2.FileDescriptorProto:
    version = package.rsplit(".", 1)[1]
    file = descriptor_pb2.FileDescriptorProto(
        name=f"grpc/reflection/{version}/reflection.proto", package=package, syntax="proto3"
    )
    if version == "v1alpha":
        file.options.deprecated = True
    file.options.go_package = f"google.golang.org/grpc/reflection/grpc_reflection_{version}"
    file.options.java_multiple_files = True
    file.options.java_package = f"io.grpc.reflection.{version}"
    file.options.java_outer_classname = "ServerReflectionProto"
    p = f".{package}."
    bp.add_message(
        file,
        "ServerReflectionRequest",
        [
            bp.field("host", 1, F.TYPE_STRING),
            bp.field("file_by_filename", 3, F.TYPE_STRING, oneof=0),
            bp.field("file_containing_symbol", 4, F.TYPE_STRING, oneof=0),
            bp.field("file_containing_extension", 5, F.TYPE_MESSAGE, p + "ExtensionRequest", oneof=0),
            bp.field("all_extension_numbers_of_type", 6, F.TYPE_STRING, oneof=0),
            bp.field("list_services", 7, F.TYPE_STRING, oneof=0),
        ],
        oneofs=["message_request"],
    )
    bp.add_message(
        file,
        "ExtensionRequest",
        [
            bp.field("containing_type", 1, F.TYPE_STRING),
            bp.field("extension_number", 2, F.TYPE_INT32),
        ],
    )
    bp.add_message(
        file,
        "ServerReflectionResponse",
        [
            bp.field("valid_host", 1, F.TYPE_STRING),
            bp.field("original_request", 2, F.TYPE_MESSAGE, p + "ServerReflectionRequest"),
            bp.field("file_descriptor_response", 4, F.TYPE_MESSAGE, p + "FileDescriptorResponse", oneof=0),
            bp.field(
                "all_extension_numbers_response",
                5,
                F.TYPE_MESSAGE,
                p + "ExtensionNumberResponse",
                oneof=0,
            ),
            bp.field("list_services_response", 6, F.TYPE_MESSAGE, p + "ListServiceResponse", oneof=0),
            bp.field("error_response", 7, F.TYPE_MESSAGE, p + "ErrorResponse", oneof=0),
        ],
        oneofs=["message_response"],
    )
    bp.add_message(
        file,
        "FileDescriptorResponse",
        [bp.field("file_descriptor_proto", 1, F.TYPE_BYTES, repeated=True)],
    )
    bp.add_message(
        file,
        "ExtensionNumberResponse",
        [
            bp.field("base_type_name", 1, F.TYPE_STRING),
            bp.field("extension_number", 2, F.TYPE_INT32, repeated=True),
        ],
    )
    bp.add_message(
        file,
        "ListServiceResponse",
        [bp.field("service", 1, F.TYPE_MESSAGE, p + "ServiceResponse", True)],
    )
    bp.add_message(file, "ServiceResponse", [bp.field("name", 1, F.TYPE_STRING)])
    bp.add_message(
        file,
        "ErrorResponse",
        [bp.field("error_code", 1, F.TYPE_INT32), bp.field("error_message", 2, F.TYPE_STRING)],
    )
    service = file.service.add(name="ServerReflection")
    bp.add_method(
        service,
        "ServerReflectionInfo",
        p + "ServerReflectionRequest",
        p + "ServerReflectionResponse",
        True,
        True,
    )
    return file


FILE_DESCRIPTOR_PROTOS: Dict[str, descriptor_pb2.FileDescriptorProto] = {pkg: _file(pkg) for pkg in PACKAGES}
DESCRIPTORS: Dict[str, Any] = {pkg: bp.register(proto) for pkg, proto in FILE_DESCRIPTOR_PROTOS.items()}
SERVICE_NAMES: Dict[str, str] = {pkg: f"{pkg}.ServerReflection" for pkg in PACKAGES}
SERVICE_NAME = SERVICE_NAMES["grpc.reflection.v1"]
SERVICE_NAME_V1ALPHA = SERVICE_NAMES["grpc.reflection.v1alpha"]


def messages(package: str) -> Any:
    """The message classes of one version, as attributes."""

    class _Messages:
        pass

    ns = _Messages()
    for name in DESCRIPTORS[package].message_types_by_name:
        setattr(ns, name, bp.message_class(f"{package}.{name}"))
    return ns
