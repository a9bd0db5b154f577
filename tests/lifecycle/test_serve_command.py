"""``python -m puregrpc serve MODULE:ATTR``: startup and shutdown lines, the demo, bad targets."""

from __future__ import annotations

import re
import signal
import sys
from typing import List, Tuple

import grpc
import pytest

from puregrpc.demo import _proto as demo_pb

from ._proc import ServerProcess, ms

STARTUP = re.compile(r"serving (\S+) on (.+) \(pid (\d+)\)")
SUMMARY = re.compile(r"stopped after ([0-9.]+)s: (\d+) RPCs finished, (\d+) cancelled")


def _serve(*args: str) -> ServerProcess:
    return ServerProcess([sys.executable, "-m", "puregrpc", "serve", *args])


def _startup(server: ServerProcess) -> Tuple[str, List[Tuple[str, int]]]:
    """The startup line's target and its (host, port) addresses; checks the pid."""
    _, line = _find(server, "serving ")
    match = STARTUP.search(line)
    assert match, line
    assert int(match.group(3)) == server.pid, line
    addresses = []
    for address in match.group(2).split(", "):
        host, _, port = address.rpartition(":")
        addresses.append((host, int(port)))
    return match.group(1), addresses


def _find(server: ServerProcess, text: str) -> Tuple[float, str]:
    """The next stderr (log) line containing ``text``."""
    while True:
        when, line = server.expect("", stream="stderr")
        if text in line:
            return when, line


def _say_hello(target: str, name: str) -> str:
    with grpc.insecure_channel(target) as channel:
        say_hello = channel.unary_unary(
            "/puregrpc.demo.Greeter/SayHello",
            request_serializer=demo_pb.HelloRequest.SerializeToString,
            response_deserializer=demo_pb.HelloReply.FromString,
        )
        reply = say_hello(demo_pb.HelloRequest(name=name), timeout=10)
    return str(reply.message)


def test_serve_demo_logs_startup_and_summary_and_exits_zero_on_sigterm() -> None:
    with _serve("puregrpc.demo:register", "--port", "0", "--grace", "0.5") as server:
        target, addresses = _startup(server)
        assert target == "puregrpc.demo:register"
        assert len(addresses) == 1 and addresses[0][0] == "localhost" and addresses[0][1] > 0
        port = addresses[0][1]
        assert _say_hello(f"localhost:{port}", "one") == "Hello, one!"
        assert _say_hello(f"127.0.0.1:{port}", "two") == "Hello, two!"
        # One RPC still running at the end of the grace: counted as cancelled.
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            stream = channel.unary_stream(
                "/puregrpc.demo.Greeter/SayHelloStream",
                request_serializer=demo_pb.HelloRequest.SerializeToString,
                response_deserializer=demo_pb.HelloReply.FromString,
            )(demo_pb.HelloRequest(name="long", count=10**9), timeout=20)
            assert next(stream).message == "Hello #1, long!"
            sent = server.kill(signal.SIGTERM)
            code = server.wait_exit(10.0)
            with pytest.raises(grpc.RpcError) as info:
                for _ in stream:
                    pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
        assert code == 0, server.describe()
        _, summary = _find(server, "stopped after")
        match = SUMMARY.search(summary)
        assert match, summary
        print(f"\nserve: SIGTERM -> exit {ms(server.exit_time - sent)}; {summary}")
        assert (int(match.group(2)), int(match.group(3))) == (2, 1), summary
        assert 0 < float(match.group(1)) < 30


def test_serve_listens_on_every_address() -> None:
    args = ["--address", "127.0.0.1:0", "--address", "127.0.0.1:0"]
    with _serve("puregrpc.demo:register", *args) as server:
        _, addresses = _startup(server)
        assert [host for host, _ in addresses] == ["127.0.0.1", "127.0.0.1"], addresses
        ports = {port for _, port in addresses}
        assert len(ports) == 2 and 0 not in ports, addresses
        for port in sorted(ports):
            assert _say_hello(f"127.0.0.1:{port}", str(port)) == f"Hello, {port}!"
        server.kill(signal.SIGTERM)
        assert server.wait_exit(10.0) == 0, server.describe()
        _find(server, "stopped after")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("puregrpc_no_such_module:register", "cannot import 'puregrpc_no_such_module'"),
        ("puregrpc.demo:no_such_attr", "'puregrpc.demo' has no attribute 'no_such_attr'"),
        ("puregrpc:__version__", "puregrpc:__version__ is not callable"),
        ("puregrpc.demo", "expected MODULE:ATTR"),
    ],
)
def test_serve_bad_target_exits_non_zero_with_a_clear_message(target: str, message: str) -> None:
    with _serve(target, "--port", "0") as server:
        code = server.wait_exit(20.0)
        assert code is not None and code != 0, server.describe()
        server.close()
        err = "\n".join(server.stderr_lines)
        assert message in err, err
        assert "Traceback" not in err, err
        assert not any(line.startswith("READY") for line in server.stdout_lines)
