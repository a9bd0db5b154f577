"""The interop server (puregrpc.interop) running in-process on localhost, for every client.

Its schema is built in code: nothing here needs the official .proto files or grpcio-tools."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, NamedTuple

import pytest

import puregrpc
from puregrpc.interop import add_test_service, load


class Interop(NamedTuple):
    port: int
    protos: Any
    server: Any


@pytest.fixture(scope="session")
def interop_protos() -> Any:
    return load()


@pytest.fixture(scope="session")
def interop_server(interop_protos: Any) -> Iterator[Interop]:
    executor = ThreadPoolExecutor(max_workers=32)
    server = puregrpc.server(executor)
    add_test_service(server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    yield Interop(port, interop_protos, server)
    server.stop(None)
    executor.shutdown(wait=False)
