"""The interop schema built in code: identical to the official .proto files, and enough
on its own (no .proto files, no grpcio-tools) to serve the interop cases."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any, Iterator, Tuple

import pytest

from puregrpc.interop import _protos, file_descriptor_protos, file_descriptor_set

from . import grpcio_cases

grpc = pytest.importorskip("grpc")

# Where the official files are: PUREGRPC_GRPC_PROTO (a copy of grpc/grpc's src/proto),
# else Debian's grpc-proto package.
OFFICIAL_ROOT = os.environ.get("PUREGRPC_GRPC_PROTO") or _protos.DEFAULT_PROTO_ROOT
NAMES = [_protos.EMPTY_PROTO, _protos.MESSAGES_PROTO, _protos.TEST_PROTO]


@pytest.fixture(scope="module")
def official() -> Any:
    if not os.path.isfile(os.path.join(OFFICIAL_ROOT, _protos.TEST_PROTO)):
        pytest.skip(
            f"the official interop .proto files are absent ({_protos.TEST_PROTO} not under {OFFICIAL_ROOT!r}): "
            "install Debian's grpc-proto or set PUREGRPC_GRPC_PROTO"
        )
    return {file.name: file for file in _protos.compile_descriptor_set(OFFICIAL_ROOT).file}


@pytest.mark.parametrize("name", NAMES)
def test_in_code_descriptor_equals_the_official_file(official: Any, name: str) -> None:
    ours = {file.name: file for file in file_descriptor_protos()}
    assert set(official) == set(ours)
    assert ours[name] == official[name], f"{name} differs from protoc's compilation of {OFFICIAL_ROOT}"


def test_descriptor_set_holds_the_three_files_dependencies_first() -> None:
    assert [file.name for file in file_descriptor_set().file] == NAMES
    assert list(file_descriptor_set().file[2].dependency) == NAMES[:2]


def test_loaded_schema_has_the_interop_services() -> None:
    protos = _protos.load()
    assert [m.name for m in protos.test_service.methods] == [
        "EmptyCall",
        "UnaryCall",
        "CacheableUnaryCall",
        "StreamingOutputCall",
        "StreamingInputCall",
        "FullDuplexCall",
        "HalfDuplexCall",
        "UnimplementedCall",
    ]
    request = protos.StreamingOutputCallRequest(response_parameters=[protos.ResponseParameters(size=3)])
    assert protos.StreamingOutputCallRequest.FromString(request.SerializeToString()) == request


def test_proto_path_that_lacks_test_proto_is_refused(tmp_path: Any) -> None:
    with pytest.raises(_protos.ProtoNotFound, match=r"test\.proto not found"):
        _protos.load(str(tmp_path))


# The interop server as a process in which grpc_tools cannot be imported and no
# .proto directory is named: it must serve from the built-in schema alone.
_WITHOUT_GRPC_TOOLS = (
    "import sys; sys.modules['grpc_tools'] = None; "
    "from puregrpc.interop.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture()
def server_without_protos(tmp_path: Any) -> Iterator[Tuple[Any, int]]:
    env = {**os.environ, "PUREGRPC_GRPC_PROTO": str(tmp_path)}  # an empty directory
    proc = subprocess.Popen(
        [sys.executable, "-c", _WITHOUT_GRPC_TOOLS, "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.stderr is not None
    lines = []
    port = None
    for line in proc.stderr:
        lines.append(line)
        match = re.search(r"listening on .*:(\d+)$", line.strip())
        if match:
            port = int(match.group(1))
            break
    if port is None:
        proc.wait(10)
        pytest.fail("the interop server did not start:\n" + "".join(lines))
    yield proc, port
    proc.kill()
    proc.wait(10)


def test_interop_server_needs_no_proto_files_nor_grpcio_tools(server_without_protos: Tuple[Any, int]) -> None:
    _, port = server_without_protos
    protos = _protos.load()
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        stubs = grpcio_cases.Stubs(channel, protos)
        grpcio_cases.empty_unary(stubs)
        grpcio_cases.large_unary(stubs)
        grpcio_cases.ping_pong(stubs)
