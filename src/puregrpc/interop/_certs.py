"""Self-signed test certificates for ``--use_tls`` (needs the ``cryptography`` package)."""

from __future__ import annotations

import datetime
import ipaddress
from typing import List, Sequence, Tuple


def self_signed(
    hostnames: Sequence[str] = ("localhost", "foo.test.google.fr"),
) -> Tuple[bytes, bytes]:
    """A fresh key and a self-signed server certificate (PEM) valid for ``hostnames``,
    127.0.0.1 and ::1, for one day. Returns ``(private_key_pem, certificate_pem)``."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError as exc:
        raise RuntimeError(
            "--use_tls without --cert_file/--key_file generates a certificate and needs "
            "the cryptography package (pip install cryptography)"
        ) from exc
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "puregrpc interop test server")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: List[x509.GeneralName] = [x509.DNSName(host) for host in hostnames]
    alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ("127.0.0.1", "::1")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
