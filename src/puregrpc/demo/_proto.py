"""The demo services' protobuf schema, built in code (no protoc, no generated files).

Equivalent ``.proto`` (package ``puregrpc.demo``)::

    message HelloRequest { string name = 1; int32 count = 2; }
    message HelloReply { string message = 1; }
    message Point { int32 latitude = 1; int32 longitude = 2; }
    message Rectangle { Point lo = 1; Point hi = 2; }
    message Feature { string name = 1; Point location = 2; }
    message RouteNote { Point location = 1; string message = 2; }
    message RouteSummary { int32 point_count = 1; int32 feature_count = 2;
                           int32 distance = 3; int32 elapsed_time = 4; }
    service Greeter {
      rpc SayHello (HelloRequest) returns (HelloReply);
      rpc SayHelloStream (HelloRequest) returns (stream HelloReply);
    }
    service RouteGuide {
      rpc GetFeature (Point) returns (Feature);
      rpc ListFeatures (Rectangle) returns (stream Feature);
      rpc RecordRoute (stream Point) returns (RouteSummary);
      rpc RouteChat (stream RouteNote) returns (stream RouteNote);
    }
"""

from __future__ import annotations

from typing import Any, List, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool

from .._descriptors import _message_class

PACKAGE = "puregrpc.demo"
_F = descriptor_pb2.FieldDescriptorProto

_MESSAGES: List[Tuple[str, List[Tuple[str, int, Any]]]] = [
    ("HelloRequest", [("name", _F.TYPE_STRING, None), ("count", _F.TYPE_INT32, None)]),
    ("HelloReply", [("message", _F.TYPE_STRING, None)]),
    ("Point", [("latitude", _F.TYPE_INT32, None), ("longitude", _F.TYPE_INT32, None)]),
    ("Rectangle", [("lo", _F.TYPE_MESSAGE, "Point"), ("hi", _F.TYPE_MESSAGE, "Point")]),
    ("Feature", [("name", _F.TYPE_STRING, None), ("location", _F.TYPE_MESSAGE, "Point")]),
    ("RouteNote", [("location", _F.TYPE_MESSAGE, "Point"), ("message", _F.TYPE_STRING, None)]),
    (
        "RouteSummary",
        [
            ("point_count", _F.TYPE_INT32, None),
            ("feature_count", _F.TYPE_INT32, None),
            ("distance", _F.TYPE_INT32, None),
            ("elapsed_time", _F.TYPE_INT32, None),
        ],
    ),
]

# (service, method, input, output, client_streaming, server_streaming)
_METHODS = [
    ("Greeter", "SayHello", "HelloRequest", "HelloReply", False, False),
    ("Greeter", "SayHelloStream", "HelloRequest", "HelloReply", False, True),
    ("RouteGuide", "GetFeature", "Point", "Feature", False, False),
    ("RouteGuide", "ListFeatures", "Rectangle", "Feature", False, True),
    ("RouteGuide", "RecordRoute", "Point", "RouteSummary", True, False),
    ("RouteGuide", "RouteChat", "RouteNote", "RouteNote", True, True),
]


def _build() -> Any:
    file = descriptor_pb2.FileDescriptorProto(name="puregrpc/demo/demo.proto", package=PACKAGE, syntax="proto3")
    for name, fields in _MESSAGES:
        message = file.message_type.add(name=name)
        for number, (field_name, field_type, type_name) in enumerate(fields, start=1):
            field = message.field.add(name=field_name, number=number, type=field_type, label=_F.LABEL_OPTIONAL)
            if type_name is not None:
                field.type_name = f".{PACKAGE}.{type_name}"
    services = {}
    for service_name, method, request, response, client_streaming, server_streaming in _METHODS:
        if service_name not in services:
            services[service_name] = file.service.add(name=service_name)
        services[service_name].method.add(
            name=method,
            input_type=f".{PACKAGE}.{request}",
            output_type=f".{PACKAGE}.{response}",
            client_streaming=client_streaming,
            server_streaming=server_streaming,
        )
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(file.name)
    except KeyError:
        return pool.Add(file) if hasattr(pool, "Add") else pool.AddSerializedFile(file.SerializeToString())


DESCRIPTOR = _build()
if not hasattr(DESCRIPTOR, "services_by_name"):  # pool.Add returned a FileDescriptorProto
    DESCRIPTOR = descriptor_pool.Default().FindFileByName("puregrpc/demo/demo.proto")

HelloRequest = _message_class(DESCRIPTOR.message_types_by_name["HelloRequest"])
HelloReply = _message_class(DESCRIPTOR.message_types_by_name["HelloReply"])
Point = _message_class(DESCRIPTOR.message_types_by_name["Point"])
Rectangle = _message_class(DESCRIPTOR.message_types_by_name["Rectangle"])
Feature = _message_class(DESCRIPTOR.message_types_by_name["Feature"])
RouteNote = _message_class(DESCRIPTOR.message_types_by_name["RouteNote"])
RouteSummary = _message_class(DESCRIPTOR.message_types_by_name["RouteSummary"])
GREETER = DESCRIPTOR.services_by_name["Greeter"]
ROUTE_GUIDE = DESCRIPTOR.services_by_name["RouteGuide"]
