"""The interop server (puregrpc.interop) running in-process on localhost, for every client."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, NamedTuple

import pytest

import puregrpc
from puregrpc.interop import ProtoNotFound, add_test_service, load


class Interop(NamedTuple):
    port: int
    protos: Any
    server: Any


@pytest.fixture(scope="session")
def interop_protos() -> Any:
    pytest.importorskip("grpc_tools")
    try:
        return load()
    except ProtoNotFound as exc:
        pytest.skip(f"the official interop protos are missing: {exc}")


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


PROTO_ROOT = os.environ.get("PUREGRPC_GRPC_PROTO", "/usr/share/grpc-proto")
