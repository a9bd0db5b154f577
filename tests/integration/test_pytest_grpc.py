"""pytest-grpc's fixtures on a puregrpc server: a project's own conftest overrides the
plugin's ``_grpc_server`` fixture (it makes ``grpc.server`` otherwise), and the plugin's
``grpc_server``, ``grpc_channel`` and ``grpc_stub`` work unchanged on top of it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import grpc
import pytest

import puregrpc

pytest.importorskip("pytest_grpc")


@pytest.fixture(scope="module")
def _grpc_server(grpc_addr: str, grpc_interceptors: Any) -> Iterator[Any]:
    pool = ThreadPoolExecutor(max_workers=4)
    yield puregrpc.server(pool, interceptors=grpc_interceptors)
    pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def grpc_add_to_server(echo_pb: Any) -> Any:
    return echo_pb[1].add_EchoServiceServicer_to_server


@pytest.fixture(scope="module")
def grpc_servicer(echo_pb: Any) -> Any:
    from echo_servicer import EchoServicer

    return EchoServicer(echo_pb[0])


@pytest.fixture(scope="module")
def grpc_stub_cls(echo_pb: Any) -> Any:
    return echo_pb[1].EchoServiceStub


def test_pytest_grpc_fixtures_serve_with_puregrpc(grpc_server: Any, grpc_stub: Any, echo_pb: Any) -> None:
    pb = echo_pb[0]
    assert isinstance(grpc_server, puregrpc.Server)
    assert grpc_stub.Unary(pb.EchoRequest(message="hi"), timeout=10).message == "hi"
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub.Unary(pb.EchoRequest(status=5, details="nope"), timeout=10)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
