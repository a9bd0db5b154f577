"""TLS for ``add_secure_port``: ``ssl_server_credentials`` and the peer's identity.

Mirrors ``grpc.ssl_server_credentials``: PEM private key / certificate chain
pairs, optional PEM root certificates, and ``require_client_auth`` (mTLS:
the client must present a certificate that the roots verify; without it no
client certificate is requested, as in grpcio). ALPN ``h2`` is required: a
client that does not negotiate it is disconnected after the handshake.
"""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple

ALPN_H2 = "h2"


class ServerCredentials:
    """TLS settings for ``Server.add_secure_port``; make with ``ssl_server_credentials``."""

    def __init__(
        self,
        pairs: Sequence[Tuple[bytes, bytes]],
        root_certificates: Optional[bytes],
        require_client_auth: bool,
    ) -> None:
        self.pairs = [(bytes(key), bytes(chain)) for key, chain in pairs]
        self.root_certificates = None if root_certificates is None else bytes(root_certificates)
        self.require_client_auth = bool(require_client_auth)

    def ssl_context(self) -> ssl.SSLContext:
        """A server ``SSLContext`` (TLS 1.2+, ALPN h2) for these credentials.

        Only the first key/certificate pair is served: there is no selection
        by SNI among several pairs.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols([ALPN_H2])
        key, chain = self.pairs[0]
        folder = tempfile.mkdtemp(prefix="puregrpc-tls-")  # mode 0700
        try:
            key_path, chain_path = (
                os.path.join(folder, "key.pem"),
                os.path.join(folder, "chain.pem"),
            )
            with open(os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
                out.write(key)
            with open(chain_path, "wb") as out:
                out.write(chain)
            try:
                context.load_cert_chain(chain_path, key_path)
            except ssl.SSLError as exc:
                raise ValueError(f"invalid private key or certificate chain: {exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if self.require_client_auth:
            assert self.root_certificates is not None
            try:
                context.load_verify_locations(cadata=self.root_certificates.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError) as exc:
                raise ValueError(f"invalid root certificates: {exc}") from exc
            context.verify_mode = ssl.CERT_REQUIRED
        else:
            context.verify_mode = ssl.CERT_NONE
        return context


def ssl_server_credentials(
    private_key_certificate_chain_pairs: Sequence[Tuple[bytes, bytes]],
    root_certificates: Optional[bytes] = None,
    require_client_auth: bool = False,
) -> ServerCredentials:
    """TLS credentials for ``add_secure_port``, as ``grpc.ssl_server_credentials``."""
    pairs = list(private_key_certificate_chain_pairs)
    if not pairs:
        raise ValueError("At least one private key-certificate chain pair is required!")
    if require_client_auth and root_certificates is None:
        raise ValueError("Illegal to require client auth without providing root certificates!")
    return ServerCredentials(pairs, root_certificates, require_client_auth)


def to_ssl_context(credentials: Any) -> ssl.SSLContext:
    """Credentials accepted by ``add_secure_port``: ours, or a ready ``ssl.SSLContext``."""
    if isinstance(credentials, ServerCredentials):
        return credentials.ssl_context()
    if isinstance(credentials, ssl.SSLContext):
        return credentials
    if type(credentials).__module__.startswith("grpc"):
        raise TypeError(
            "grpcio's ServerCredentials are opaque C objects puregrpc cannot read: "
            "make them with puregrpc.ssl_server_credentials(...) (same arguments)"
        )
    raise TypeError(f"add_secure_port needs puregrpc.ssl_server_credentials(...), got {credentials!r}")


# -- the peer's identity, as grpcio's auth_context reports it ------------------------
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "emailAddress": "emailAddress",
}
_SAN_PROPERTIES = {
    "DNS": "peer_dns",
    "email": "peer_email",
    "IP Address": "peer_ip",
    "URI": "peer_uri",
}


def auth_properties(ssl_object: Any) -> Tuple[Dict[str, List[bytes]], Optional[str]]:
    """(auth context, peer identity property name) of a TLS connection."""
    props: Dict[str, List[bytes]] = {
        "transport_security_type": [b"ssl"],
        "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"],
        "ssl_session_reused": [b"true" if ssl_object.session_reused else b"false"],
    }
    cert = ssl_object.getpeercert()
    if not cert:
        return props, None
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        props["x509_pem_cert"] = [ssl.DER_cert_to_PEM_cert(der).encode("ascii")]
    subject = [pair for rdn in cert.get("subject", ()) for pair in rdn]
    props["x509_subject"] = [
        ",".join(f"{_SHORT_NAMES.get(key, key)}={value}" for key, value in reversed(subject)).encode()
    ]
    common_names = [value.encode() for key, value in subject if key == "commonName"]
    if common_names:
        props["x509_common_name"] = common_names[:1]
    sans = [(kind, str(value)) for kind, value in cert.get("subjectAltName", ())]
    if sans:
        props["x509_subject_alternative_name"] = [value.encode() for _, value in sans]
        for kind, value in sans:
            name = _SAN_PROPERTIES.get(kind)
            if name is not None:
                props.setdefault(name, []).append(value.encode())
    if "x509_subject_alternative_name" in props:
        return props, "x509_subject_alternative_name"
    if "x509_common_name" in props:
        return props, "x509_common_name"
    return props, None
