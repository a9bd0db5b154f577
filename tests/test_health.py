"""Health checking (grpc.health.v1): Check, Watch, drain wiring, grpcio's servicer on puregrpc."""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any, Iterator, Tuple

import pytest

import puregrpc
from puregrpc import health

grpc = pytest.importorskip("grpc")

CHECK = "/grpc.health.v1.Health/Check"
WATCH = "/grpc.health.v1.Health/Watch"


def _stubs(channel: Any) -> Tuple[Any, Any]:
    check = channel.unary_unary(
        CHECK,
        request_serializer=health.HealthCheckRequest.SerializeToString,
        response_deserializer=health.HealthCheckResponse.FromString,
    )
    watch = channel.unary_stream(
        WATCH,
        request_serializer=health.HealthCheckRequest.SerializeToString,
        response_deserializer=health.HealthCheckResponse.FromString,
    )
    return check, watch


@pytest.fixture()
def served(pool: Any) -> Iterator[Tuple[Any, Any, Any]]:
    server = puregrpc.server(pool)
    servicer = health.add_health_servicer(server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        yield server, servicer, channel
    server.stop(None)


def _watch_into(watch: Any, service: str) -> Tuple[Any, queue.Queue[Any]]:
    responses = watch(health.HealthCheckRequest(service=service))
    out: queue.Queue[Any] = queue.Queue()

    def pump() -> None:
        try:
            for response in responses:
                out.put(response.status)
        except grpc.RpcError as exc:
            out.put(exc.code())

    threading.Thread(target=pump, daemon=True).start()
    return responses, out


def test_check(served: Any) -> None:
    _, servicer, channel = served
    check, _ = _stubs(channel)
    assert check(health.HealthCheckRequest(service="")).status == health.SERVING
    servicer.set("pkg.Svc", health.NOT_SERVING)
    assert check(health.HealthCheckRequest(service="pkg.Svc")).status == health.NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        check(health.HealthCheckRequest(service="unknown.Svc"))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND


def test_watch_sends_changes(served: Any) -> None:
    _, servicer, channel = served
    _, watch = _stubs(channel)
    responses, out = _watch_into(watch, "pkg.Svc")
    assert out.get(timeout=5) == health.SERVICE_UNKNOWN
    servicer.set("pkg.Svc", health.SERVING)
    assert out.get(timeout=5) == health.SERVING
    servicer.set("pkg.Svc", health.SERVING)  # no change: nothing sent
    servicer.set("pkg.Svc", health.NOT_SERVING)
    assert out.get(timeout=5) == health.NOT_SERVING
    responses.cancel()
    assert out.get(timeout=5) is grpc.StatusCode.CANCELLED


def test_drain_turns_everything_not_serving(served: Any) -> None:
    server, servicer, channel = served
    servicer.set("pkg.Svc", health.SERVING)
    _, watch = _stubs(channel)
    _, overall = _watch_into(watch, "")
    _, one = _watch_into(watch, "pkg.Svc")
    assert overall.get(timeout=5) == health.SERVING
    assert one.get(timeout=5) == health.SERVING
    start = time.monotonic()
    server.stop(5)
    assert overall.get(timeout=5) == health.NOT_SERVING
    assert one.get(timeout=5) == health.NOT_SERVING
    assert time.monotonic() - start < 1.0
    assert servicer.status("") == health.NOT_SERVING
    servicer.set("pkg.Svc", health.SERVING)  # ignored once draining
    assert servicer.status("pkg.Svc") == health.NOT_SERVING


def test_drain_listener_added_after_drain_runs_at_once(pool: Any) -> None:
    server = puregrpc.server(pool)
    server.add_insecure_port("localhost:0")
    server.start()
    server.stop(None)
    called = threading.Event()
    server.add_drain_listener(called.set)
    assert called.wait(5)


def test_a_listener_that_calls_sys_exit_leaves_later_callbacks_running(pool: Any) -> None:
    """Listeners run on one thread; a SystemExit from one once ended it, and every
    listener and RPC callback after it never ran."""
    first = puregrpc.server(pool)
    first.add_insecure_port("localhost:0")
    first.add_drain_listener(lambda: sys.exit(3))
    first.start()
    first.stop(None)
    second = puregrpc.server(pool)
    second.add_insecure_port("localhost:0")
    called = threading.Event()
    second.add_drain_listener(called.set)
    second.start()
    second.stop(None)
    assert called.wait(5), "a drain listener queued after one that called sys.exit() never ran"


def test_grpcio_health_servicer_on_puregrpc(pool: Any) -> None:
    health_pb2 = pytest.importorskip("grpc_health.v1.health_pb2")
    health_pb2_grpc = pytest.importorskip("grpc_health.v1.health_pb2_grpc")
    grpc_health = pytest.importorskip("grpc_health.v1.health")
    servicer = grpc_health.HealthServicer()
    server = puregrpc.server(pool)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)  # generated code, unchanged
    server.add_drain_listener(servicer.enter_graceful_shutdown)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        servicer.set("pkg.Svc", health_pb2.HealthCheckResponse.SERVING)
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service="pkg.Svc"))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="pkg.Svc"))
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            server.stop(5)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
    finally:
        server.stop(None)


def test_grpcio_health_servicer_via_add_health_servicer(pool: Any) -> None:
    grpc_health = pytest.importorskip("grpc_health.v1.health")
    servicer = grpc_health.HealthServicer()
    server = puregrpc.server(pool)
    health.add_health_servicer(server, servicer)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            check, _ = _stubs(channel)
            assert check(health.HealthCheckRequest(service="")).status == health.SERVING
    finally:
        server.stop(None)


def test_descriptor_matches_official_proto() -> None:
    """Our in-code descriptor equals protoc's compilation of grpc-proto's health.proto."""
    from puregrpc.health import _proto
    from puregrpc.interop._protos import ProtoNotFound, compile_descriptor_set

    pytest.importorskip("grpc_tools")
    try:
        official = compile_descriptor_set("/usr/share/grpc-proto", "grpc/health/v1/health.proto")
    except ProtoNotFound as exc:
        pytest.skip(str(exc))
    (file,) = [f for f in official.file if f.name == _proto.FILE_NAME]
    file.ClearField("source_code_info")
    assert file == _proto.FILE_DESCRIPTOR_PROTO
