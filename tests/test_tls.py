"""TLS and mTLS: add_secure_port with ssl_server_credentials, ALPN h2, peer identity."""

from __future__ import annotations

import socket
import ssl
from typing import Any, Iterator, Tuple

import pytest

import puregrpc

grpc = pytest.importorskip("grpc")
trustme = pytest.importorskip("trustme")

METHOD = "/tls.Test/Who"


def _who(request: bytes, context: Any) -> bytes:
    auth = context.auth_context()
    lines = [
        f"key={context.peer_identity_key()}",
        f"ids={context.peer_identities()}",
        f"type={auth.get('transport_security_type')}",
        f"cn={auth.get('x509_common_name')}",
        f"san={auth.get('x509_subject_alternative_name')}",
    ]
    return "\n".join(lines).encode()


def _handlers() -> Any:
    handler = puregrpc.unary_unary_rpc_method_handler(_who)
    return puregrpc.method_handlers_generic_handler("tls.Test", {"Who": handler})


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_cert(ca: Any) -> Any:
    return ca.issue_cert("localhost", "127.0.0.1", "::1")


def _serve(pool: Any, credentials: Any) -> Tuple[Any, int]:
    server = puregrpc.server(pool, handlers=[_handlers()])
    port = server.add_secure_port("localhost:0", credentials)
    server.start()
    return server, port


def _server_pair(cert: Any) -> Tuple[bytes, bytes]:
    return cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes()


def _call(port: int, credentials: Any) -> str:
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        result: bytes = channel.unary_unary(METHOD)(b"", timeout=10)
        return result.decode()


@pytest.fixture()
def tls_server(pool: Any, server_cert: Any) -> Iterator[int]:
    server, port = _serve(pool, puregrpc.ssl_server_credentials([_server_pair(server_cert)]))
    yield port
    server.stop(None)


def test_tls(tls_server: int, ca: Any) -> None:
    answer = _call(tls_server, grpc.ssl_channel_credentials(ca.cert_pem.bytes()))
    assert "type=[b'ssl']" in answer
    assert "key=None" in answer and "ids=None" in answer  # no client certificate


def test_tls_untrusted_server_fails(tls_server: int) -> None:
    other = trustme.CA()
    with pytest.raises(grpc.RpcError) as info:
        _call(tls_server, grpc.ssl_channel_credentials(other.cert_pem.bytes()))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_on_tls_port_fails(tls_server: int) -> None:
    with (
        grpc.insecure_channel(f"localhost:{tls_server}") as channel,
        pytest.raises(grpc.RpcError) as info,
    ):
        channel.unary_unary(METHOD)(b"", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("alpn", [None, ["http/1.1"]])
def test_client_without_alpn_h2_is_disconnected(tls_server: int, ca: Any, alpn: Any) -> None:
    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    if alpn:
        context.set_alpn_protocols(alpn)
    raw = socket.create_connection(("127.0.0.1", tls_server), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\4\0\0\0\0\0")
        try:
            data = tls.recv(1024)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        assert data == b""  # closed without an HTTP/2 SETTINGS frame


def test_alpn_h2_raw_client_gets_settings(tls_server: int, ca: Any) -> None:
    context = ssl.create_default_context(cadata=ca.cert_pem.bytes().decode())
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", tls_server), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"
        tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\4\0\0\0\0\0")
        data = tls.recv(1024)
        assert data[3] == 0x4  # a SETTINGS frame


@pytest.fixture()
def mtls_server(pool: Any, ca: Any, server_cert: Any) -> Iterator[int]:
    credentials = puregrpc.ssl_server_credentials(
        [_server_pair(server_cert)], root_certificates=ca.cert_pem.bytes(), require_client_auth=True
    )
    server, port = _serve(pool, credentials)
    yield port
    server.stop(None)


def test_mtls_peer_identity(mtls_server: int, ca: Any) -> None:
    client = ca.issue_cert("client.example.com", common_name="client-cn")
    credentials = grpc.ssl_channel_credentials(
        ca.cert_pem.bytes(), client.private_key_pem.bytes(), client.cert_chain_pems[0].bytes()
    )
    answer = _call(mtls_server, credentials)
    assert "key=x509_subject_alternative_name" in answer
    assert "ids=[b'client.example.com']" in answer
    assert "cn=[b'client-cn']" in answer
    assert "type=[b'ssl']" in answer


def test_mtls_refuses_client_without_certificate(mtls_server: int, ca: Any) -> None:
    with pytest.raises(grpc.RpcError) as info:
        _call(mtls_server, grpc.ssl_channel_credentials(ca.cert_pem.bytes()))
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_mtls_refuses_certificate_from_another_ca(mtls_server: int, ca: Any) -> None:
    other = trustme.CA()
    client = other.issue_cert("client.example.com")
    credentials = grpc.ssl_channel_credentials(
        ca.cert_pem.bytes(), client.private_key_pem.bytes(), client.cert_chain_pems[0].bytes()
    )
    with pytest.raises(grpc.RpcError) as info:
        _call(mtls_server, credentials)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


def test_credentials_validation(server_cert: Any) -> None:
    with pytest.raises(ValueError):
        puregrpc.ssl_server_credentials([])
    with pytest.raises(ValueError):
        puregrpc.ssl_server_credentials([_server_pair(server_cert)], require_client_auth=True)


def test_bad_key_raises_before_binding(pool: Any) -> None:
    server = puregrpc.server(pool)
    with pytest.raises(ValueError, match="private key or certificate"):
        server.add_secure_port("localhost:0", puregrpc.ssl_server_credentials([(b"junk", b"junk")]))


def test_grpcio_credentials_rejected_clearly(pool: Any, server_cert: Any) -> None:
    server = puregrpc.server(pool)
    with pytest.raises(TypeError, match=r"puregrpc\.ssl_server_credentials"):
        server.add_secure_port("localhost:0", grpc.ssl_server_credentials([_server_pair(server_cert)]))


def test_secure_port_after_start_raises(pool: Any, server_cert: Any) -> None:
    server = puregrpc.server(pool)
    server.add_insecure_port("localhost:0")
    server.start()
    try:
        with pytest.raises(RuntimeError):
            server.add_secure_port("localhost:0", puregrpc.ssl_server_credentials([_server_pair(server_cert)]))
    finally:
        server.stop(None)


def test_insecure_auth_context(pool: Any) -> None:
    server = puregrpc.server(pool, handlers=[_handlers()])
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            answer = channel.unary_unary(METHOD)(b"", timeout=10).decode()
        assert "type=[b'insecure']" in answer and "ids=None" in answer
    finally:
        server.stop(None)
