"""Fixtures of the integration suite: generated code and a running echo server."""

from __future__ import annotations

from typing import Any, Iterator, Tuple

import grpc
import pytest
from echo_servicer import EchoServicer

from ._support import Running, serve


@pytest.fixture(scope="session")
def pb(echo_pb: Tuple[Any, Any]) -> Any:
    return echo_pb[0]


@pytest.fixture(scope="session")
def pb_grpc(echo_pb: Tuple[Any, Any]) -> Any:
    return echo_pb[1]


@pytest.fixture(scope="module")
def echo_server(echo_pb: Tuple[Any, Any]) -> Iterator[Running]:
    """The echo service, registered by grpcio-tools' generated code (module-wide)."""
    pb, pb_grpc = echo_pb
    with serve(lambda s: pb_grpc.add_EchoServiceServicer_to_server(EchoServicer(pb), s)) as running:
        yield running


@pytest.fixture()
def echo_channel(echo_server: Running) -> Iterator[grpc.Channel]:
    ch = echo_server.channel()
    yield ch
    ch.close()


@pytest.fixture()
def stub(echo_channel: grpc.Channel, pb_grpc: Any) -> Any:
    return pb_grpc.EchoServiceStub(echo_channel)
