"""Addresses as grpcio accepts them: IPv4, IPv6, dual-stack, localhost, Unix sockets, port 0."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Iterator, List

import pytest

import puregrpc

grpc = pytest.importorskip("grpc")

METHOD = "/addr.Test/Peer"


def _peer(request: bytes, context: Any) -> bytes:
    return context.peer().encode()


def _server(pool: Any, options: Any = None) -> Any:
    handler = puregrpc.unary_unary_rpc_method_handler(_peer)
    generic = puregrpc.method_handlers_generic_handler("addr.Test", {"Peer": handler})
    return puregrpc.server(pool, handlers=[generic], options=options)


def _ask(target: str) -> str:
    with grpc.insecure_channel(target) as channel:
        result: bytes = channel.unary_unary(METHOD)(b"", timeout=10)
        return result.decode()


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this host")


@pytest.fixture()
def served(pool: Any) -> Iterator[Any]:
    servers: List[Any] = []

    def serve(address: str, options: Any = None) -> int:
        server = _server(pool, options)
        port: int = server.add_insecure_port(address)
        server.start()
        servers.append(server)
        return port

    yield serve
    for server in servers:
        server.stop(None)


def test_ipv4(served: Any) -> None:
    port = served("127.0.0.1:0")
    assert port > 0
    assert _ask(f"127.0.0.1:{port}").startswith("ipv4:127.0.0.1:")


@needs_ipv6
def test_ipv6_loopback(served: Any) -> None:
    port = served("[::1]:0")
    assert _ask(f"[::1]:{port}").startswith("ipv6:[::1]:")
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 2):
        pass  # "[::1]" is IPv6 only


@needs_ipv6
def test_ipv6_any_is_dual_stack(served: Any) -> None:
    port = served("[::]:0")
    assert _ask(f"[::1]:{port}").startswith("ipv6:[::1]:")
    peer = _ask(f"127.0.0.1:{port}")
    assert peer.startswith(("ipv4:127.0.0.1:", "ipv6:[::ffff:127.0.0.1]:"))


def test_localhost_both_families(served: Any) -> None:
    port = served("localhost:0")
    assert _ask(f"127.0.0.1:{port}").startswith("ipv4:")
    if _has_ipv6():
        assert _ask(f"[::1]:{port}").startswith("ipv6:")
    assert _ask(f"localhost:{port}")


def test_unix_relative(served: Any, tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    assert served("unix:rel.sock") == 0
    assert (tmp_path / "rel.sock").exists()
    assert _ask("unix:rel.sock").startswith("unix:")


def test_unix_absolute(served: Any, tmp_path: Any) -> None:
    path = tmp_path / "abs.sock"
    assert served(f"unix://{path}") == 0
    assert _ask(f"unix://{path}").startswith("unix:")
    assert _ask(f"unix:{path}").startswith("unix:")


def test_unix_stale_socket_file_is_replaced(served: Any, tmp_path: Any) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # leaves the file behind, as a crashed server would
    served(f"unix:{path}")
    assert _ask(f"unix:{path}")


@pytest.mark.skipif(not os.path.exists("/proc/net/unix"), reason="abstract sockets are Linux only")
def test_unix_abstract(served: Any) -> None:
    name = f"puregrpc-test-{uuid.uuid4().hex}"
    served(f"unix-abstract:{name}")
    assert _ask(f"unix-abstract:{name}").startswith("unix")


def test_port_zero_picks_distinct_free_ports(served: Any) -> None:
    assert served("127.0.0.1:0") != served("127.0.0.1:0")


def test_several_ports_on_one_server(pool: Any) -> None:
    server = _server(pool)
    first = server.add_insecure_port("127.0.0.1:0")
    second = server.add_insecure_port("localhost:0")
    server.start()
    try:
        assert _ask(f"127.0.0.1:{first}") and _ask(f"localhost:{second}")
    finally:
        server.stop(None)


def test_busy_port_names_the_address(pool: Any) -> None:
    first = _server(pool)
    port = first.add_insecure_port("127.0.0.1:0")
    try:
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
            _server(pool).add_insecure_port(f"127.0.0.1:{port}")
    finally:
        first.stop(None)


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_so_reuseport_shares_a_port(pool: Any) -> None:
    options = [("grpc.so_reuseport", 1)]
    first, second = _server(pool, options), _server(pool, options)
    port = first.add_insecure_port("127.0.0.1:0")
    assert second.add_insecure_port(f"127.0.0.1:{port}") == port
    first.start()
    second.start()
    try:
        assert _ask(f"127.0.0.1:{port}")
    finally:
        first.stop(None)
        second.stop(None)


@pytest.mark.parametrize(
    "address",
    [
        "nonsense",
        "127.0.0.1:99999",
        "127.0.0.1:port",
        "[::1",
        "unix:",
        "256.1.1.1:0",
        "unix:/no/such/dir/x.sock",
    ],
)
def test_bad_address_names_it(pool: Any, address: str) -> None:
    with pytest.raises(RuntimeError, match=repr(address).replace("[", r"\[").replace(".", r"\.")):
        _server(pool).add_insecure_port(address)
