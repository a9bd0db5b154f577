"""Fixtures of the asyncio-server suite: every test runs against grpc.aio and puregrpc.aio."""

from __future__ import annotations

from typing import Any, Callable, Tuple

import pytest

from ._support import FLAVOURS, aio_module, puregrpc_aio_missing, serve


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    """``grpcaio`` (grpc.aio.server, the reference) or ``puregrpc`` (puregrpc.aio.server)."""
    if request.param == "puregrpc":
        why = puregrpc_aio_missing()
        if why is not None:
            pytest.skip("puregrpc.aio not importable")
    return str(request.param)


@pytest.fixture()
def aio(flavour: str) -> Any:
    """The module under test: ``grpc.aio`` or ``puregrpc.aio``."""
    return aio_module(flavour)


@pytest.fixture()
def served(flavour: str) -> Callable[..., Any]:
    """``served(*generic_handlers, setup=None, **server_kwargs)``: a context manager
    yielding a started server of this test's flavour."""

    def factory(*handlers: Any, **kwargs: Any) -> Any:
        return serve(flavour, *handlers, **kwargs)

    return factory


@pytest.fixture(scope="session")
def pb(echo_pb: Tuple[Any, Any]) -> Any:
    return echo_pb[0]


@pytest.fixture(scope="session")
def pb_grpc(echo_pb: Tuple[Any, Any]) -> Any:
    return echo_pb[1]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "grpcaio_wrong(reason): grpc.aio 1.85 is known to get this wrong; xfail(strict) for the grpcaio flavour only",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:  # type: ignore[type-arg]
    for item in items:
        marker = item.get_closest_marker("grpcaio_wrong")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or callspec.params.get("flavour") != "grpcaio":
            continue
        reason = marker.args[0] if marker.args else "known grpc.aio bug"
        # strict=False where grpc.aio's bug is a race that a run may not hit (an RPC
        # arriving as stop() begins): an XPASS there says nothing about the server.
        strict = bool(marker.kwargs.get("strict", True))
        item.add_marker(pytest.mark.xfail(reason=f"grpc.aio 1.85: {reason}", strict=strict))
