"""``python -m puregrpc.interop --port N``: the interop server, as the official ones run.

Plaintext on 127.0.0.1 and ::1 unless ``--host`` says otherwise. ``--use_tls``
serves TLS with ``--cert_file``/``--key_file``, or with a self-signed
certificate made at startup (valid for localhost, foo.test.google.fr,
127.0.0.1 and ::1) whose PEM is written to ``--cert_out`` (default: a temp
file, printed) so that clients can trust it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List, Optional

from .. import server as make_server
from . import ProtoNotFound, add_test_service


def _address(host: Optional[str], port: int) -> str:
    if host is None:
        return f"localhost:{port}"  # 127.0.0.1 and ::1 on one port
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _credentials(args: argparse.Namespace) -> Any:
    from .. import ssl_server_credentials

    if args.cert_file or args.key_file:
        if not (args.cert_file and args.key_file):
            raise SystemExit("--cert_file and --key_file go together")
        with open(args.key_file, "rb") as key_file, open(args.cert_file, "rb") as cert_file:
            key, cert = key_file.read(), cert_file.read()
    else:
        from ._certs import self_signed

        key, cert = self_signed()
        path = args.cert_out
        if path is None:
            handle, path = tempfile.mkstemp(prefix="puregrpc-interop-", suffix=".pem")
            os.close(handle)
        with open(path, "wb") as out:
            out.write(cert)
        print(f"interop server certificate (trust it as the CA): {path}", file=sys.stderr, flush=True)
    return ssl_server_credentials([(key, cert)])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m puregrpc.interop", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="port to serve on (0: pick one, printed)")
    parser.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1 and ::1)")
    parser.add_argument("--use_tls", default="false", nargs="?", const="true", help="serve TLS (true/false)")
    parser.add_argument("--cert_file", default=None, help="PEM certificate chain for --use_tls")
    parser.add_argument("--key_file", default=None, help="PEM private key for --use_tls")
    parser.add_argument("--cert_out", default=None, help="where to write a generated certificate")
    parser.add_argument(
        "--proto_path",
        default=None,
        help="serve the schema compiled from DIR/grpc/testing/test.proto (needs grpcio-tools or protoc) "
        "instead of the built-in one",
        metavar="DIR",
    )
    parser.add_argument("--max_workers", type=int, default=32)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    pool = ThreadPoolExecutor(max_workers=args.max_workers, thread_name_prefix="interop")
    srv = make_server(pool)
    try:
        protos = add_test_service(srv, args.proto_path)
    except ProtoNotFound as exc:
        parser.error(str(exc))
    from ..health import add_health_servicer
    from ..reflection import enable_server_reflection

    add_health_servicer(srv)
    enable_server_reflection(["grpc.testing.TestService"], srv, pool=protos.pool)
    address = _address(args.host, args.port)
    use_tls = str(args.use_tls).lower() in ("true", "1", "yes")
    port = srv.add_secure_port(address, _credentials(args)) if use_tls else srv.add_insecure_port(address)

    def on_signal(signum: int, frame: Any) -> None:
        srv.stop(1.0)

    signal.signal(signal.SIGTERM, on_signal)  # before the "listening" line: no race
    srv.start()
    print(
        f"interop server listening on {address.rsplit(':', 1)[0]}:{port}",
        file=sys.stderr,
        flush=True,
    )

    try:
        srv.wait_for_termination()
    except KeyboardInterrupt:
        srv.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
