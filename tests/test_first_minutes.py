"""A new user's first minutes, done the way they would do them.

The demo runs as a real process (``puregrpc serve puregrpc.demo:register``) and is
called as grpcurl calls it (server reflection for the schema, JSON bodies) and as
the README's Python example does, verbatim. The README's grpcurl commands, their
outputs and the ``puregrpc serve --help`` text it shows are checked against what
the code does, and bad ``puregrpc serve`` arguments must give one line and exit 2.
"""

from __future__ import annotations

import os
import pathlib
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory

grpc = pytest.importorskip("grpc")

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
STARTUP = re.compile(r"serving (\S+) on (.+) \(pid (\d+)\)")
DEMO_ADDRESS = "localhost:50051"  # as the README writes it


# -- the README ----------------------------------------------------------------------


def _section(title: str) -> str:
    """The README section whose ``## `` heading starts with ``title``."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def _blocks(text: str, lang: str) -> List[str]:
    """The fenced code blocks of one language in ``text``, in order."""
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S) if m.group(1) == lang]


class _Grpcurl(NamedTuple):
    body: Optional[str]  # -d
    address: str
    verb: str  # "list", "describe" or a method (Service/Method)
    symbol: Optional[str]


def _grpcurl_commands() -> List[_Grpcurl]:
    (block,) = [b for b in _blocks(_section("Calling the demo"), "sh") if "grpcurl" in b]
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        assert words[0] == "grpcurl", line
        body = None
        rest = words[1:]
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            if flag == "-d":
                body = rest.pop(0)
            else:
                assert flag == "-plaintext", line
        address, verb, *symbol = rest
        commands.append(_Grpcurl(body, address, verb, symbol[0] if symbol else None))
    return commands


# -- processes -----------------------------------------------------------------------


class _Process:
    """A ``puregrpc`` command as a process; its stderr (the log) read by a thread."""

    def __init__(self, args: Sequence[str], cwd: Optional[pathlib.Path] = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(cwd) if cwd is not None else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.log: List[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put(None)

    def port(self, timeout: float = 30.0) -> int:
        """The port of the startup line ``serving TARGET on HOST:PORT (pid N)``."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no startup line:\n" + "".join(self.log)) from None
            if line is None:
                raise AssertionError("exited before serving:\n" + "".join(self.log))
            self.log.append(line)
            match = STARTUP.search(line)
            if match:
                assert int(match.group(3)) == self.proc.pid, line
                return int(match.group(2).rsplit(":", 1)[1])

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(15)


@pytest.fixture(scope="module")
def demo() -> Iterator[str]:
    """``puregrpc serve puregrpc.demo:register --port 0``: the address it serves on."""
    process = _Process(["-m", "puregrpc", "serve", "puregrpc.demo:register", "--port", "0"])
    try:
        yield f"localhost:{process.port()}"
    finally:
        assert process.stop() == 0


def _message_class(descriptor: Any) -> Any:
    get = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if get is not None:
        return get(descriptor)
    return message_factory.MessageFactory(descriptor.file.pool).GetPrototype(descriptor)


def _reflection_pool(channel: Any) -> Tuple[Any, Any]:
    """What grpcurl does first: a descriptor pool filled by server reflection."""
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    database = ProtoReflectionDescriptorDatabase(channel)
    return database, descriptor_pool.DescriptorPool(database)


# -- the demo, as grpcurl sees it -----------------------------------------------------


def test_readme_grpcurl_commands_are_list_describe_and_calls() -> None:
    commands = _grpcurl_commands()
    assert {c.address for c in commands} == {DEMO_ADDRESS}
    assert [c.verb for c in commands[:2]] == ["list", "describe"]
    assert commands[1].symbol == "puregrpc.demo.Greeter"
    assert all("/" in c.verb and c.body for c in commands[2:]) and len(commands) >= 3


def test_list_answers_the_services_readme_shows(demo: str) -> None:
    (shown,) = _blocks(_section("Calling the demo"), "text")
    with grpc.insecure_channel(demo) as channel:
        database, _ = _reflection_pool(channel)
        services = sorted(database.get_services())
    assert services == shown.split()
    assert {"puregrpc.demo.Greeter", "puregrpc.demo.RouteGuide", "grpc.health.v1.Health"} <= set(services)


def test_describe_greeter_by_reflection(demo: str) -> None:
    with grpc.insecure_channel(demo) as channel:
        _, pool = _reflection_pool(channel)
        greeter = pool.FindServiceByName("puregrpc.demo.Greeter")
        methods = {
            m.name: (m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming)
            for m in greeter.methods
        }
        route_guide = pool.FindServiceByName("puregrpc.demo.RouteGuide")
        request_fields = [(f.name, f.number) for f in pool.FindMessageTypeByName("puregrpc.demo.HelloRequest").fields]
    assert methods == {
        "SayHello": ("puregrpc.demo.HelloRequest", "puregrpc.demo.HelloReply", False, False),
        "SayHelloStream": ("puregrpc.demo.HelloRequest", "puregrpc.demo.HelloReply", False, True),
    }
    assert [m.name for m in route_guide.methods] == ["GetFeature", "ListFeatures", "RecordRoute", "RouteChat"]
    assert request_fields == [("name", 1), ("count", 2)]


def test_readme_grpcurl_calls_answer_the_json_shown(demo: str) -> None:
    """Each ``grpcurl -d JSON ... Service/Method`` call of the README, made as grpcurl
    makes it: types from reflection, the body parsed from JSON, the reply printed as JSON."""
    calls = [c for c in _grpcurl_commands() if c.body is not None]
    outputs = _blocks(_section("Calling the demo"), "json")
    assert len(outputs) == len(calls)
    with grpc.insecure_channel(demo) as channel:
        _, pool = _reflection_pool(channel)
        for call, shown in zip(calls, outputs):
            service_name, method_name = call.verb.split("/")
            method = pool.FindServiceByName(service_name).methods_by_name[method_name]
            request_class, reply_class = _message_class(method.input_type), _message_class(method.output_type)
            assert call.body is not None
            request = json_format.Parse(call.body, request_class())
            stub = channel.unary_unary(
                f"/{service_name}/{method_name}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=reply_class.FromString,
            )
            reply = stub(request, timeout=10)
            assert json_format.MessageToJson(reply) == shown.strip(), call


def test_demo_services_are_serving_by_grpcio_health_checking(demo: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(demo) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "puregrpc.demo.Greeter", "puregrpc.demo.RouteGuide"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- the README's Python client, verbatim -------------------------------------------------


def test_readme_python_example_runs_verbatim(demo: str, tmp_path: pathlib.Path) -> None:
    (code,) = _blocks(_section("Calling the demo"), "python")
    assert code.count(DEMO_ADDRESS) == 1
    assert not re.search(r"import _|\._", code), "the example must use public modules only"
    expected = re.search(r"print\(.*\)\s*# (.+)$", code, re.M)
    assert expected, "the example shows what it prints in a comment"
    run = subprocess.run(
        [sys.executable, "-c", code.replace(DEMO_ADDRESS, demo)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(tmp_path),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == expected.group(1) + "\n"


def test_demo_message_classes_are_public() -> None:
    import puregrpc.demo as demo_module

    for name in ("HelloRequest", "HelloReply", "Point", "Rectangle", "Feature", "RouteNote", "RouteSummary"):
        assert name in demo_module.__all__
        assert getattr(demo_module, name).DESCRIPTOR.full_name == f"puregrpc.demo.{name}"


def test_python_m_puregrpc_demo_serves_the_same(tmp_path: pathlib.Path) -> None:
    from puregrpc.demo import HelloReply, HelloRequest

    process = _Process(["-m", "puregrpc.demo", "--port", "0"], cwd=tmp_path)
    try:
        with grpc.insecure_channel(f"localhost:{process.port()}") as channel:
            say_hello = channel.unary_unary(
                "/puregrpc.demo.Greeter/SayHello",
                request_serializer=HelloRequest.SerializeToString,
                response_deserializer=HelloReply.FromString,
            )
            assert say_hello(HelloRequest(name="module"), timeout=10).message == "Hello, module!"
            _, pool = _reflection_pool(channel)
            assert pool.FindServiceByName("puregrpc.demo.RouteGuide").name == "RouteGuide"
    finally:
        assert process.stop() == 0


# -- puregrpc serve: help and arguments ----------------------------------------------------


def _run_cli(args: Sequence[str], cwd: pathlib.Path) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "puregrpc", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(cwd),
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )


def test_readme_shows_the_current_serve_help(tmp_path: pathlib.Path) -> None:
    (shown,) = [b for b in _blocks(_section("Serving your own services"), "text") if b.startswith("usage:")]
    run = _run_cli(["serve", "--help"], tmp_path)
    assert run.returncode == 0, run.stderr
    actual = run.stdout.replace("optional arguments:", "options:")  # Python < 3.10 says the former
    assert actual.strip() == shown.strip()


BAD_ARGUMENTS: Dict[str, Tuple[List[str], str]] = {
    "no colon": (["serve", "puregrpc.demo"], "puregrpc serve: expected MODULE:ATTR"),
    "empty attribute": (["serve", "puregrpc.demo:"], "puregrpc serve: expected MODULE:ATTR"),
    "missing module": (["serve", "puregrpc_no_such_module:register"], "cannot import 'puregrpc_no_such_module'"),
    "missing attribute": (["serve", "puregrpc.demo:no_such_attr"], "'puregrpc.demo' has no attribute 'no_such_attr'"),
    "not callable": (["serve", "puregrpc:__version__"], "puregrpc:__version__ is not callable"),
    "wrong signature": (["serve", "puregrpc.demo:Greeter"], "cannot be called with one argument, the server"),
    "unknown option": (["serve", "puregrpc.demo:register", "--no-such-option"], "unrecognized arguments"),
    "bad port": (["serve", "puregrpc.demo:register", "--port", "http"], "argument --port: not a port number"),
    "port out of range": (["serve", "puregrpc.demo:register", "--port", "70000"], "outside 0-65535"),
    "bad log level": (["serve", "puregrpc.demo:register", "--log-level", "loud"], "unknown log level 'loud'"),
    "no workers": (["serve", "puregrpc.demo:register", "--max-workers", "0"], "must be at least 1"),
    "negative grace": (["serve", "puregrpc.demo:register", "--grace", "-1"], "must be 0 or more"),
    "bad address": (["serve", "puregrpc.demo:register", "--address", "nonsense"], "cannot parse address"),
    "no target": (["serve"], "the following arguments are required: MODULE:ATTR"),
    "no command": ([], "puregrpc: the following arguments are required: COMMAND"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARGUMENTS))
def test_serve_bad_arguments_give_one_line_and_exit_2(case: str, tmp_path: pathlib.Path) -> None:
    args, fragment = BAD_ARGUMENTS[case]
    run = _run_cli(args, tmp_path)
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(("puregrpc serve: ", "puregrpc: ")), lines[0]
    assert fragment in lines[0]
    assert run.stdout == ""


def test_serve_busy_port_gives_one_line_and_exits_1(tmp_path: pathlib.Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = _run_cli(["serve", "puregrpc.demo:register", "--address", f"127.0.0.1:{port}"], tmp_path)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"puregrpc serve: failed to bind to address '127.0.0.1:{port}'"), line


# -- puregrpc serve with generated code, as a user's project has it ----------------------------

_GREETER_PROTO = """\
syntax = "proto3";
package firstminutes;
message HelloRequest { string name = 1; }
message HelloReply { string message = 1; }
service Greeter { rpc SayHello (HelloRequest) returns (HelloReply); }
"""

_GREETER_SERVER = """\
import functools
import types

import greeter_pb2
import greeter_pb2_grpc


class Greeter(greeter_pb2_grpc.GreeterServicer):
    def SayHello(self, request, context):
        return greeter_pb2.HelloReply(message=f"Hello, {request.name}!")


register = functools.partial(greeter_pb2_grpc.add_GreeterServicer_to_server, Greeter())
app = types.SimpleNamespace(register=register)
"""


@pytest.fixture(scope="module")
def user_project(tmp_path_factory: Any) -> pathlib.Path:
    """A folder with greeter.proto compiled by grpcio-tools and a server module using it."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    folder: pathlib.Path = tmp_path_factory.mktemp("project")
    (folder / "greeter.proto").write_text(_GREETER_PROTO)
    args = ["protoc", f"-I{folder}", f"--python_out={folder}", f"--grpc_python_out={folder}", "greeter.proto"]
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert protoc.main(args) == 0
    finally:
        os.chdir(cwd)
    (folder / "greeter_server.py").write_text(textwrap.dedent(_GREETER_SERVER))
    return folder


@pytest.mark.parametrize("target", ["greeter_server:register", "greeter_server:app.register"])
def test_serve_a_partial_of_generated_add_servicer_from_the_current_directory(
    user_project: pathlib.Path, target: str
) -> None:
    process = _Process(["-m", "puregrpc", "serve", target, "--port", "0"], cwd=user_project)
    try:
        with grpc.insecure_channel(f"localhost:{process.port()}") as channel:
            # raw bytes: field 1 (string), as protobuf encodes HelloRequest(name="partial")
            say_hello = channel.unary_unary("/firstminutes.Greeter/SayHello")
            reply = say_hello(b"\x0a\x07partial", timeout=10)
        message = b"Hello, partial!"
        assert reply == b"\x0a" + bytes([len(message)]) + message
    finally:
        assert process.stop() == 0
