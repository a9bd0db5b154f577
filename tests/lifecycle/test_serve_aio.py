"""``puregrpc serve`` with an asyncio service: detected from an async MODULE:ATTR (or
``--aio``), served on an asyncio loop, drained by SIGTERM, and under ``--workers``."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, List

import grpc

from ._proc import SCRIPTS, ServerProcess
from .test_serve_command import _find, _say_hello, _startup


def _serve(*args: str) -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "puregrpc", "serve", *args])


def _call(port: int, method: str, request: bytes, timeout: float = 10.0) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply: bytes = channel.unary_unary(f"/aio.Service/{method}")(request, timeout=timeout)
    return reply


def test_async_target_is_served_on_the_loop_and_drains_on_sigterm(monkeypatch: Any) -> None:
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.setenv("PYTHONPATH", str(SCRIPTS))
    with _serve("aio_service:register", "--port", "0", "--grace", "5") as server:
        _find(server, "asyncio server (puregrpc.aio)")
        _, addresses = _startup(server)
        port = addresses[0][1]
        # No thread hop: the handler runs on the thread that runs the loop.
        assert _call(port, "Where", b"") == b"MainThread"
        results: List[Any] = []

        def slow() -> None:
            try:
                results.append(_call(port, "Slow", b"2.0"))
            except grpc.RpcError as exc:
                results.append(exc.code())

        caller = threading.Thread(target=slow)
        caller.start()
        time.sleep(0.8)  # the call reaches the server (it runs 2 s)
        server.kill(signal.SIGTERM)
        code = server.wait_exit(10.0)
        caller.join(10.0)
        assert code == 0, server.describe()
        # The in-flight call finished within the grace.
        assert results == [b"slept 2.0"], results
        _find(server, "stopped after")


def test_aio_flag_serves_sync_handlers_in_the_migration_pool() -> None:
    with _serve("puregrpc.demo:register", "--aio", "--port", "0", "--health") as server:
        _find(server, "asyncio server (puregrpc.aio)")
        _, addresses = _startup(server)
        port = addresses[0][1]
        assert _say_hello(f"localhost:{port}", "aio") == "Hello, aio!"
        server.kill(signal.SIGINT)
        assert server.wait_exit(10.0) == 0, server.describe()


def test_aio_service_under_workers(monkeypatch: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PYTHONPATH", str(SCRIPTS))
    with _serve("aio_service:register", "--port", str(port), "--workers", "2") as server:
        for _ in range(2):  # each worker says it serves
            _find(server, "serving aio_service:register")
        for _ in range(20):
            assert _call(port, "Slow", b"0") == b"slept 0"
        server.kill(signal.SIGTERM)
        assert server.wait_exit(20.0) == 0, server.describe()
