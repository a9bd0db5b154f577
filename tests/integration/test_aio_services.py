"""Standard services on a puregrpc.aio server, checked with grpcio's clients: grpcio's own
asyncio health servicer (async handlers, asyncio.Condition), puregrpc's health service
(sync handlers, in the migration pool) with its drain hook, and reflection."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as grpc_health_aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import puregrpc.aio
from puregrpc._loop import _new_event_loop
from puregrpc.health import add_health_servicer
from puregrpc.reflection import enable_server_reflection


class _LoopThread:
    """An asyncio loop on a thread: the aio server lives there, the test calls with grpcio.
    uvloop's where it is installed (the uvloop run of scripts/test)."""

    def __init__(self) -> None:
        self.loop = _new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def aio_loop() -> Iterator[_LoopThread]:
    loop = _LoopThread()
    yield loop
    loop.close()


def _serve(aio_loop: _LoopThread, register: Callable[[Any], Any]) -> Any:
    async def start() -> Any:
        server = puregrpc.aio.server()
        result = register(server)
        if asyncio.iscoroutine(result):
            await result
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    return aio_loop.run(start())


def test_grpcio_aio_health_servicer(aio_loop: _LoopThread) -> None:
    servicer = grpc_health_aio.HealthServicer()

    async def register(server: Any) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        await servicer.set("svc", health_pb2.HealthCheckResponse.SERVING)

    server, port = _serve(aio_loop, register)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service="svc"), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as info:
                stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            watch = stub.Watch(health_pb2.HealthCheckRequest(service="svc"), timeout=10)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            aio_loop.run(servicer.set("svc", health_pb2.HealthCheckResponse.NOT_SERVING))
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
    finally:
        aio_loop.run(server.stop(None))


def test_puregrpc_health_and_reflection(aio_loop: _LoopThread) -> None:
    def register(server: Any) -> None:
        health = add_health_servicer(server)
        health.set("svc", health_pb2.HealthCheckResponse.SERVING)
        enable_server_reflection(["svc"], server)

    server, port = _serve(aio_loop, register)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        assert stub.Check(health_pb2.HealthCheckRequest(service="svc"), timeout=5).status == (
            health_pb2.HealthCheckResponse.SERVING
        )
        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        )
        names = {s.name for s in replies[0].list_services_response.service}
        assert "svc" in names and "grpc.reflection.v1alpha.ServerReflection" in names
        # The drain turns every service NOT_SERVING, seen by the watcher before the stream ends.
        stopping = asyncio.run_coroutine_threadsafe(server.stop(2), aio_loop.loop)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopping.result(10)


def test_a_sync_and_an_asyncio_server_in_one_process(aio_loop: _LoopThread) -> None:
    """Each on its own loop (puregrpc's I/O thread; the caller's), both served at once,
    and stopping one leaves the other serving."""
    from concurrent.futures import ThreadPoolExecutor

    import puregrpc

    async def hello_async(request: bytes, context: Any) -> bytes:
        return b"aio " + request

    def hello_sync(request: bytes, context: Any) -> bytes:
        return b"sync " + request

    def handlers(fn: Any) -> Any:
        return puregrpc.method_handlers_generic_handler("both.S", {"Hi": puregrpc.unary_unary_rpc_method_handler(fn)})

    aio_server, aio_port = _serve(aio_loop, lambda server: server.add_generic_rpc_handlers((handlers(hello_async),)))
    sync_server = puregrpc.server(ThreadPoolExecutor(4), handlers=(handlers(hello_sync),))
    sync_port = sync_server.add_insecure_port("127.0.0.1:0")
    sync_server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{aio_port}") as a, grpc.insecure_channel(f"127.0.0.1:{sync_port}") as s:
            for i in range(20):
                assert a.unary_unary("/both.S/Hi")(b"%d" % i, timeout=5) == b"aio %d" % i
                assert s.unary_unary("/both.S/Hi")(b"%d" % i, timeout=5) == b"sync %d" % i
            aio_loop.run(aio_server.stop(1))
            assert s.unary_unary("/both.S/Hi")(b"after", timeout=5) == b"sync after"
            with pytest.raises(grpc.RpcError) as info:
                a.unary_unary("/both.S/Hi")(b"x", timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        sync_server.stop(None)
        aio_loop.run(aio_server.stop(None))
