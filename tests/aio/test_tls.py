"""add_secure_port: TLS, and the peer's identity through the context (certificates by trustme)."""

from __future__ import annotations

import importlib
from typing import Any, Dict, List

import grpc
import pytest

from ._support import TIMEOUT, generic, method

trustme = pytest.importorskip("trustme")


def _identity_handler(seen: List[Dict[str, Any]]) -> grpc.GenericRpcHandler:
    async def who(request: bytes, context: Any) -> bytes:
        seen.append(
            {
                "identities": context.peer_identities(),
                "key": context.peer_identity_key(),
                "auth": context.auth_context(),
                "peer": context.peer(),
            }
        )
        return b"secure"

    return generic({"Who": grpc.unary_unary_rpc_method_handler(who)})


@pytest.mark.parametrize("client_auth", [False, True], ids=["server-auth", "mutual"])
def test_secure_port(served: Any, flavour: str, client_auth: bool) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    client_cert = ca.issue_cert("client.example")
    # grpcio's credentials are opaque C objects: puregrpc has its own factory, with the same arguments
    factory = grpc.ssl_server_credentials
    if flavour == "puregrpc":
        factory = importlib.import_module("puregrpc").ssl_server_credentials
    credentials = factory(
        [(server_cert.private_key_pem.bytes(), server_cert.cert_chain_pems[0].bytes())],
        root_certificates=ca.cert_pem.bytes() if client_auth else None,
        require_client_auth=client_auth,
    )
    ports: List[int] = []
    seen: List[Dict[str, Any]] = []
    setup = lambda server: ports.append(server.add_secure_port("localhost:0", credentials))  # noqa: E731
    with served(_identity_handler(seen), setup=setup) as s:
        assert ports[0] > 0
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=ca.cert_pem.bytes(),
            private_key=client_cert.private_key_pem.bytes() if client_auth else None,
            certificate_chain=client_cert.cert_chain_pems[0].bytes() if client_auth else None,
        )
        with grpc.secure_channel(f"localhost:{ports[0]}", channel_credentials) as ch:
            assert ch.unary_unary(method("Who"))(b"", timeout=TIMEOUT) == b"secure"
        with s.open_channel() as plain:  # the insecure port still answers
            assert plain.unary_unary(method("Who"))(b"", timeout=TIMEOUT) == b"secure"
    secure, insecure = seen
    assert secure["auth"]["transport_security_type"] == [b"ssl"]
    assert insecure["auth"]["transport_security_type"] == [b"insecure"]
    assert insecure["identities"] is None
    if client_auth:
        assert b"client.example" in secure["identities"]
        assert secure["key"] == "x509_subject_alternative_name"
        assert secure["auth"]["x509_subject_alternative_name"] == [b"client.example"]
    else:
        assert secure["identities"] is None
        assert secure["key"] is None
