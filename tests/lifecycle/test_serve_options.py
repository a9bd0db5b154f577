"""``puregrpc serve`` options: --version, --help, TLS and mTLS, --health, --reflection,
--option, --access-log, and their bad values (one line, exit status 2).

Each serving test runs ``python -m puregrpc serve pid_service:register --port 0 ...`` in a
subprocess and calls it with a grpcio client over a real socket.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import re
import signal
import subprocess
import sys
from typing import Any, Iterator, List, Tuple

import grpc
import pytest

from puregrpc import __main__ as cli
from puregrpc import __version__

from ._proc import ServerProcess

HERE = pathlib.Path(__file__).parent  # pid_service.py
TARGET = "pid_service:register"
STARTUP = re.compile(r"serving \S+ on localhost:(\d+)(?: with m?TLS)? \(pid (\d+)\)")
TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def _service_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p))


def _cli(*args: str) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "puregrpc", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


class Served:
    """``puregrpc serve pid_service:register --port 0 <args>``, started and serving."""

    def __init__(self, *args: str, target: str = TARGET) -> None:
        self.proc = ServerProcess([sys.executable, "-m", "puregrpc", "serve", target, "--port", "0", *args])
        while True:
            _, line = self.proc.expect("", timeout=TIMEOUT, stream="stderr")
            match = STARTUP.search(line)
            if match:
                break
        self.startup = line
        self.port = int(match.group(1))
        assert int(match.group(2)) == self.proc.pid

    def stop(self) -> List[str]:
        """SIGTERM; exit status 0; every stderr line."""
        self.proc.kill(signal.SIGTERM)
        assert self.proc.wait_exit(TIMEOUT) == 0, self.proc.describe()
        self.proc.close()
        return self.proc.stderr_lines


@pytest.fixture()
def serve() -> Iterator[Any]:
    started: List[Served] = []

    def start(*args: str, target: str = TARGET) -> Served:
        started.append(Served(*args, target=target))
        return started[-1]

    yield start
    for served in started:
        served.proc.close()


def _get(channel: grpc.Channel, request: bytes = b"") -> int:
    return int(channel.unary_unary("/lifecycle.Pid/Get")(request, timeout=15))


# -- --version and --help ----------------------------------------------------------------


@pytest.mark.parametrize("args", [["--version"], ["serve", "--version"]])
def test_version(args: List[str]) -> None:
    run = _cli(*args)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"puregrpc {__version__}"


EVERY_OPTION = [
    "--version",
    "--address",
    "--port",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--health",
    "--reflection",
    "--option",
    "--grace",
    "--drain-delay",
    "--max-workers",
    "--aio",
    "--workers",
    "--log-level",
    "--access-log",
    "--metrics-port",
]


def test_help_shows_every_option_with_its_default() -> None:
    run = _cli("serve", "--help")
    assert run.returncode == 0, run.stderr
    text = run.stdout
    parser = cli._parser().commands["serve"]
    shown = [
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]
    assert sorted(shown) == sorted(EVERY_OPTION)
    for option in EVERY_OPTION:
        assert re.search(rf"^\s+{re.escape(option)}\b", text, re.MULTILINE), option
    assert "--worker-fd" not in text  # the supervisor's, hidden
    flat = " ".join(text.split())
    for default in ("(default localhost:50051)", "draining (10)", "handler threads (10)", "(INFO)", "(0)"):
        assert default in flat, default
    assert "--port binds localhost only" in flat and "--address [::]:PORT or --address 0.0.0.0:PORT" in flat


# -- TLS and mTLS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Any, pathlib.Path]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("pki")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(folder / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "server.pem"))
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return ca, folder


def test_tls_serves_a_grpcio_secure_channel(serve: Any, pki: Tuple[Any, pathlib.Path]) -> None:
    ca, folder = pki
    served = serve("--tls-cert", str(folder / "server.pem"), "--tls-key", str(folder / "server.key"))
    assert "with TLS" in served.startup
    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    with grpc.secure_channel(f"localhost:{served.port}", credentials) as channel:
        assert _get(channel) == served.proc.pid
    with grpc.insecure_channel(f"localhost:{served.port}") as plain, pytest.raises(grpc.RpcError) as info:
        _get(plain)  # plaintext HTTP/2 on a TLS port
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    served.stop()


def test_mtls_requires_a_client_certificate(serve: Any, pki: Tuple[Any, pathlib.Path]) -> None:
    ca, folder = pki
    served = serve(
        "--tls-cert",
        str(folder / "server.pem"),
        "--tls-key",
        str(folder / "server.key"),
        "--tls-client-ca",
        str(folder / "ca.pem"),
    )
    assert "with mTLS" in served.startup
    client = ca.issue_cert("client.example")
    with_cert = grpc.ssl_channel_credentials(
        root_certificates=ca.cert_pem.bytes(),
        private_key=client.private_key_pem.bytes(),
        certificate_chain=client.cert_chain_pems[0].bytes(),
    )
    with grpc.secure_channel(f"localhost:{served.port}", with_cert) as channel:
        assert _get(channel) == served.proc.pid
    without_cert = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    with grpc.secure_channel(f"localhost:{served.port}", without_cert) as channel, pytest.raises(grpc.RpcError) as info:
        _get(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    served.stop()


# -- --health and --reflection -------------------------------------------------------------


def test_health_answers_serving_then_not_serving_on_drain(serve: Any) -> None:
    pytest.importorskip("grpc_health")
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    served = serve("--health", "--drain-delay", "30", "--grace", "1")
    with grpc.insecure_channel(f"localhost:{served.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "lifecycle.Pid"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=15)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=15)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service="lifecycle.Pid"), timeout=TIMEOUT)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        served.proc.kill(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=15)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert _get(channel) == served.proc.pid  # still serving during the drain delay
        served.proc.kill(signal.SIGTERM)  # the second signal ends the 30 s delay
    assert served.proc.wait_exit(TIMEOUT) == 0, served.proc.describe()


def test_reflection_lists_the_registered_services(serve: Any) -> None:
    pytest.importorskip("grpc_reflection")
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    served = serve("--reflection", "--health")
    with grpc.insecure_channel(f"localhost:{served.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=15))
    names = sorted(s.name for s in reply.list_services_response.service)
    assert names == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "lifecycle.Pid",
    ]
    served.stop()


def test_health_and_reflection_leave_the_demos_own_alone(serve: Any) -> None:
    served = serve("--health", "--reflection", target="puregrpc.demo:register")  # it adds both itself
    text = "\n".join(served.stop())
    assert "--health adds nothing" in text and "--reflection adds nothing" in text, text


# -- --option ------------------------------------------------------------------------------


def test_option_reaches_the_server(serve: Any) -> None:
    served = serve("--option", "grpc.max_receive_message_length=10", "--option", "x.label=some text")
    with grpc.insecure_channel(f"localhost:{served.port}") as channel:
        assert _get(channel, b"0123456789") == served.proc.pid  # 10 bytes: allowed
        with pytest.raises(grpc.RpcError) as info:
            _get(channel, b"x" * 100)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value
    served.stop()


@pytest.mark.parametrize(
    ("text", "value"),
    [("a=1", 1), ("a=-7", -7), ("a=1.5", "1.5"), ("a=", ""), ("a=x=y", "x=y"), ("grpc.primary_user_agent=me", "me")],
)
def test_option_values_are_typed_as_grpcio_takes_them(text: str, value: Any) -> None:
    assert cli._option(text) == (text.split("=", 1)[0], value)


BAD = {
    "option without =": (["--option", "grpc.max_receive_message_length"], "expected NAME=VALUE"),
    "option without name": (["--option", "=5"], "expected NAME=VALUE"),
    "option of the wrong type": (["--option", "grpc.max_receive_message_length=big"], "must be an int"),
    "cert without key": (["--tls-cert", "server.pem"], "--tls-cert and --tls-key go together"),
    "key without cert": (["--tls-key", "server.key"], "--tls-cert and --tls-key go together"),
    "client CA without TLS": (["--tls-client-ca", "ca.pem"], "--tls-client-ca needs --tls-cert and --tls-key"),
    "missing cert file": (["--tls-cert", "nowhere.pem", "--tls-key", "nowhere.key"], "--tls-cert: cannot read"),
    "not a certificate": (["--tls-cert", "SELF", "--tls-key", "SELF"], "cannot use --tls-cert"),
    "bad workers": (["--workers", "0"], "argument --workers: must be at least 1"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_options_give_one_line_and_exit_2(case: str) -> None:
    args, fragment = BAD[case]
    args = [__file__ if arg == "SELF" else arg for arg in args]
    run = _cli("serve", TARGET, "--port", "0", *args)
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("puregrpc serve: ") and fragment in lines[0], lines[0]


# -- --access-log --------------------------------------------------------------------------


def test_access_log_flag_sets_the_access_logger() -> None:
    access = logging.getLogger(cli.ACCESS_LOGGER)
    before = access.level
    try:
        for flags, level in (([], logging.WARNING), (["--access-log"], logging.INFO)):
            args = cli._parser().parse_args(["serve", TARGET, "--log-level", "ERROR", *flags])
            cli.configure_logging(args)
            assert access.getEffectiveLevel() == level, flags
    finally:
        access.setLevel(before)


def test_access_log_shows_one_line_per_rpc(serve: Any) -> None:
    served = serve("--access-log")
    with grpc.insecure_channel(f"localhost:{served.port}") as channel:
        for _ in range(3):
            _get(channel)
        with pytest.raises(grpc.RpcError):
            channel.unary_unary("/lifecycle.Pid/Nothing")(b"", timeout=15)
    lines = served.stop()
    access = [line for line in lines if cli.ACCESS_LOGGER in line]
    assert len(access) == 4, lines
    assert all("/lifecycle.Pid/Get OK" in line for line in access[:3]), access
    assert "/lifecycle.Pid/Nothing UNIMPLEMENTED" in access[3], access
    quiet = serve()
    with grpc.insecure_channel(f"localhost:{quiet.port}") as channel:
        _get(channel)
    assert not [line for line in quiet.stop() if cli.ACCESS_LOGGER in line]  # off without the flag
