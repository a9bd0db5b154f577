"""The I/O thread's event loop: uvloop when it imports, asyncio's own loop otherwise.

``./scripts/test`` runs the suite once without uvloop and the socket suites again with
it, and names the loop each run must be on in ``PUREGRPC_EXPECT_LOOP`` ("asyncio" or
"uvloop"): so neither run can quietly end up on the other loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from typing import Any, Dict

import grpc
import pytest

from puregrpc._loop import io_thread

from ._support import TIMEOUT, serve

EXPECT_VAR = "PUREGRPC_EXPECT_LOOP"
SERVICE = "loop.Probe"


def _uvloop_importable() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def _kind(loop: asyncio.AbstractEventLoop) -> str:
    if _uvloop_importable():
        import uvloop

        if isinstance(loop, uvloop.Loop):
            return "uvloop"
    if isinstance(loop, asyncio.BaseEventLoop) and type(loop).__module__.startswith("asyncio."):
        return "asyncio"
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


def _expected() -> str:
    expect = os.environ.get(EXPECT_VAR)
    if expect is None:
        # no matrix: the contract of puregrpc._loop alone
        return "uvloop" if _uvloop_importable() else "asyncio"
    assert expect in ("asyncio", "uvloop"), f"{EXPECT_VAR}={expect!r}: expected 'asyncio' or 'uvloop'"
    return expect


def test_environment_matches_expectation() -> None:
    """The run's environment itself: uvloop installed exactly in the uvloop run."""
    assert _uvloop_importable() == (_expected() == "uvloop")


def test_io_thread_runs_expected_loop() -> None:
    io = io_thread()
    running = io.call(asyncio.get_running_loop, timeout=TIMEOUT)
    assert running is io.loop
    assert _kind(running) == _expected()


def test_unary_call_served_on_expected_loop() -> None:
    seen: Dict[str, Any] = {}

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        seen["thread"] = threading.current_thread().name
        return b"echo:" + request

    handler = grpc.method_handlers_generic_handler(SERVICE, {"Unary": grpc.unary_unary_rpc_method_handler(unary)})
    with serve(handlers=[handler]) as running:
        ch = running.channel()
        try:
            reply, call = ch.unary_unary(f"/{SERVICE}/Unary").with_call(b"x" * 100_000, timeout=TIMEOUT)
        finally:
            ch.close()
        loop = running.server._core.io.loop
    assert reply == b"echo:" + b"x" * 100_000
    assert call.code() is grpc.StatusCode.OK
    assert seen["thread"].startswith("handler")
    assert loop is io_thread().loop
    assert _kind(loop) == _expected()


@pytest.mark.skipif(os.environ.get(EXPECT_VAR) != "uvloop", reason="only in the uvloop run")
def test_uvloop_run_really_has_uvloop() -> None:
    import uvloop

    assert isinstance(io_thread().loop, uvloop.Loop)


def test_aio_suites_serve_on_the_expected_loop() -> None:
    """tests/aio and test_aio_services run puregrpc.aio on loops made by ``_new_event_loop``
    (the caller's loop, for puregrpc.aio): uvloop's in the uvloop run."""
    from puregrpc._loop import _new_event_loop

    loop = _new_event_loop()
    try:
        assert _kind(loop) == _expected()
    finally:
        loop.close()
