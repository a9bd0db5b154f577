"""The interop cases with grpcio's client against puregrpc's interop server."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

grpc = pytest.importorskip("grpc")

from . import grpcio_cases  # noqa: E402
from .conftest import Interop  # noqa: E402

CASES = sorted([*grpcio_cases.CASES, "channel_soak"])


@pytest.fixture(scope="module")
def channel(interop_server: Interop) -> Iterator[Any]:
    with grpc.insecure_channel(f"localhost:{interop_server.port}") as chan:
        yield chan


@pytest.mark.parametrize("case", CASES)
def test_interop_case(case: str, channel: Any, interop_server: Interop) -> None:
    stubs = grpcio_cases.Stubs(channel, interop_server.protos)
    if case == "channel_soak":
        grpcio_cases.channel_soak(stubs, f"localhost:{interop_server.port}")
    else:
        grpcio_cases.CASES[case](stubs)
