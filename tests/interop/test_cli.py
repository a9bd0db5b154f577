"""``python -m puregrpc.interop --port N`` as a process, as official interop clients see it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from typing import Any, Iterator, List

import pytest

from . import grpcio_cases

grpc = pytest.importorskip("grpc")


def start(args: List[str]) -> Any:
    proc = subprocess.Popen([sys.executable, "-m", "puregrpc.interop", *args], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        match = re.search(r"listening on .*:(\d+)$", line.strip())
        if match:
            return proc, int(match.group(1)), lines
    proc.wait(5)
    raise AssertionError("the interop server did not start:\n" + "".join(lines))


@pytest.fixture()
def cli_server(interop_protos: Any) -> Iterator[Any]:
    proc, port, _ = start(["--port", "0"])
    yield proc, port
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_serves_both_loopbacks(cli_server: Any, host: str, interop_protos: Any) -> None:
    _, port = cli_server
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stubs = grpcio_cases.Stubs(channel, interop_protos)
        grpcio_cases.empty_unary(stubs)
        grpcio_cases.large_unary(stubs)


def test_sigterm_exits_cleanly(cli_server: Any) -> None:
    proc, _ = cli_server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_use_tls_with_generated_certificate(interop_protos: Any, tmp_path: Any) -> None:
    pytest.importorskip("cryptography")
    cert = tmp_path / "ca.pem"
    proc, port, _ = start(["--port", "0", "--use_tls", "true", "--cert_out", str(cert)])
    try:
        credentials = grpc.ssl_channel_credentials(cert.read_bytes())
        with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
            stubs = grpcio_cases.Stubs(channel, interop_protos)
            grpcio_cases.large_unary(stubs)
        options = (("grpc.ssl_target_name_override", "foo.test.google.fr"),)
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options) as channel:
            grpcio_cases.empty_unary(grpcio_cases.Stubs(channel, interop_protos))
    finally:
        proc.kill()
        proc.wait()
