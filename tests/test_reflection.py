"""Server reflection v1 and v1alpha: grpcio-reflection's client and raw requests."""

from __future__ import annotations

from typing import Any, Iterator, List

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

import puregrpc
from puregrpc import reflection
from puregrpc.demo import _proto as demo_pb
from puregrpc.health import add_health_servicer
from puregrpc.reflection import _proto as reflection_proto

grpc = pytest.importorskip("grpc")

GREETER = "puregrpc.demo.Greeter"


def _extension_pool() -> Any:
    """A private pool with a proto2 message and an extension of it."""
    pool = descriptor_pool.DescriptorPool()
    F = descriptor_pb2.FieldDescriptorProto
    base = descriptor_pb2.FileDescriptorProto(name="ext/base.proto", package="ext", syntax="proto2")
    message = base.message_type.add(name="Base")
    message.field.add(name="id", number=1, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
    message.extension_range.add(start=100, end=201)
    base.service.add(name="BaseService").method.add(name="Get", input_type=".ext.Base", output_type=".ext.Base")
    more = descriptor_pb2.FileDescriptorProto(
        name="ext/more.proto", package="ext", syntax="proto2", dependency=["ext/base.proto"]
    )
    for name, number in (("color", 123), ("size", 150)):
        more.extension.add(
            name=name,
            number=number,
            type=F.TYPE_INT32,
            label=F.LABEL_OPTIONAL,
            extendee=".ext.Base",
        )
    pool.Add(base)
    pool.Add(more)
    return pool


@pytest.fixture()
def channel(pool: Any) -> Iterator[Any]:
    server = puregrpc.server(pool)
    demo_pb_register(server)
    add_health_servicer(server)
    reflection.enable_server_reflection([GREETER, "grpc.health.v1.Health"], server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    with grpc.insecure_channel(f"localhost:{port}") as chan:
        yield chan
    server.stop(None)


def demo_pb_register(server: Any) -> None:
    from puregrpc.demo import register

    register(server)


def _ask(channel: Any, package: str, requests: List[Any]) -> List[Any]:
    pb = reflection_proto.messages(package)
    info = channel.stream_stream(
        f"/{package}.ServerReflection/ServerReflectionInfo",
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString,
    )
    return list(info(iter(requests)))


@pytest.mark.parametrize("package", reflection_proto.PACKAGES)
def test_list_services(channel: Any, package: str) -> None:
    pb = reflection_proto.messages(package)
    (reply,) = _ask(channel, package, [pb.ServerReflectionRequest(host="h", list_services="")])
    names = [s.name for s in reply.list_services_response.service]
    assert names == sorted([GREETER, "grpc.health.v1.Health", *reflection.SERVICE_NAMES])
    assert reply.valid_host == "h"
    assert reply.original_request.list_services == ""


def _files(reply: Any) -> List[Any]:
    return [
        descriptor_pb2.FileDescriptorProto.FromString(b) for b in reply.file_descriptor_response.file_descriptor_proto
    ]


@pytest.mark.parametrize("package", reflection_proto.PACKAGES)
def test_files_and_symbols(channel: Any, package: str) -> None:
    pb = reflection_proto.messages(package)
    replies = _ask(
        channel,
        package,
        [
            pb.ServerReflectionRequest(file_by_filename="puregrpc/demo/demo.proto"),
            pb.ServerReflectionRequest(file_containing_symbol=GREETER),
            pb.ServerReflectionRequest(file_containing_symbol=f"{GREETER}.SayHello"),
            pb.ServerReflectionRequest(file_containing_symbol="puregrpc.demo.HelloRequest"),
            pb.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
            pb.ServerReflectionRequest(file_by_filename="no/such.proto"),
            pb.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
            pb.ServerReflectionRequest(all_extension_numbers_of_type="no.such.Type"),
            pb.ServerReflectionRequest(
                file_containing_extension=pb.ExtensionRequest(
                    containing_type="puregrpc.demo.HelloRequest", extension_number=5
                )
            ),
        ],
    )
    for reply in replies[:4]:
        assert [f.name for f in _files(reply)] == ["puregrpc/demo/demo.proto"]
    # ours, or grpcio-health-checking's ("grpc_health/v1/health.proto") if a test
    # imported it into the default pool, which is searched first
    (health_file,) = _files(replies[4])
    assert health_file.package == "grpc.health.v1"
    assert [s.name for s in health_file.service] == ["Health"]
    for reply in replies[5:]:
        assert reply.WhichOneof("message_response") == "error_response"
        assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


@pytest.mark.parametrize("package", reflection_proto.PACKAGES)
def test_extensions(pool: Any, package: str) -> None:
    server = puregrpc.server(pool)
    reflection.enable_server_reflection(["ext.BaseService"], server, pool=_extension_pool())
    port = server.add_insecure_port("localhost:0")
    server.start()
    pb = reflection_proto.messages(package)
    try:
        with grpc.insecure_channel(f"localhost:{port}") as chan:
            numbers, by_ext, missing = _ask(
                chan,
                package,
                [
                    pb.ServerReflectionRequest(all_extension_numbers_of_type="ext.Base"),
                    pb.ServerReflectionRequest(
                        file_containing_extension=pb.ExtensionRequest(containing_type="ext.Base", extension_number=150)
                    ),
                    pb.ServerReflectionRequest(
                        file_containing_extension=pb.ExtensionRequest(containing_type="ext.Base", extension_number=199)
                    ),
                ],
            )
    finally:
        server.stop(None)
    assert numbers.all_extension_numbers_response.base_type_name == "ext.Base"
    assert list(numbers.all_extension_numbers_response.extension_number) == [123, 150]
    assert [f.name for f in _files(by_ext)] == ["ext/more.proto", "ext/base.proto"]
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_grpcio_reflection_client_resolves_a_method(channel: Any) -> None:
    db_module = pytest.importorskip("grpc_reflection.v1alpha.proto_reflection_descriptor_database")
    database = db_module.ProtoReflectionDescriptorDatabase(channel)
    services = database.get_services()
    assert GREETER in services
    client_pool = descriptor_pool.DescriptorPool(database)
    service = client_pool.FindServiceByName(GREETER)
    method = service.methods_by_name["SayHello"]
    assert method.input_type.full_name == "puregrpc.demo.HelloRequest"
    assert method.output_type.full_name == "puregrpc.demo.HelloReply"
    assert [f.name for f in method.input_type.fields] == [f.name for f in demo_pb.HelloRequest.DESCRIPTOR.fields]
    health = client_pool.FindServiceByName("grpc.health.v1.Health")
    assert health.methods_by_name["Watch"].server_streaming


@pytest.mark.parametrize("package", reflection_proto.PACKAGES)
def test_descriptor_matches_official_proto(package: str) -> None:
    from puregrpc.interop._protos import ProtoNotFound, compile_descriptor_set

    pytest.importorskip("grpc_tools")
    ours = reflection_proto.FILE_DESCRIPTOR_PROTOS[package]
    try:
        official = compile_descriptor_set("/usr/share/grpc-proto", ours.name)
    except ProtoNotFound as exc:
        pytest.skip(str(exc))
    (file,) = [f for f in official.file if f.name == ours.name]
    file.ClearField("source_code_info")
    assert file == ours
