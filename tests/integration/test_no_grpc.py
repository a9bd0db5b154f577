"""A descriptor-only service served by a process that cannot import grpc."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from typing import Any

import grpc
import pytest

from ._support import TIMEOUT

SERVER_SCRIPT = r'''
import sys


class _NoGrpc:
    """A meta path finder that makes grpc and grpc_tools impossible to import."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("grpc", "grpc_tools"):
            raise ImportError(f"{name} is blocked in this process")
        return None


sys.meta_path.insert(0, _NoGrpc())
try:
    import grpc  # noqa: F401
except ImportError:
    pass
else:
    sys.exit("grpc was importable")

from concurrent.futures import ThreadPoolExecutor

import echo_test_pb2
from echo_servicer import EchoServicer

import puregrpc


class Tag(puregrpc.ServerInterceptor):
    def intercept_service(self, continuation, details):
        return continuation(details)


def shout(request, context):
    context.set_trailing_metadata((("shouted", "yes"),))
    return request.upper()


server = puregrpc.server(ThreadPoolExecutor(4), interceptors=[Tag()])
descriptor = echo_test_pb2.DESCRIPTOR.services_by_name["EchoService"]
puregrpc.add_servicer(server, descriptor, EchoServicer(echo_test_pb2))
server.add_generic_rpc_handlers((
    puregrpc.method_handlers_generic_handler(
        "raw.Shout", {"Shout": puregrpc.unary_unary_rpc_method_handler(shout)}
    ),
))
port = server.add_insecure_port("localhost:0")
server.start()
print(port, flush=True)
sys.stdin.readline()
server.stop(1).wait(10)
loaded = sorted(m for m in sys.modules if m == "grpc" or m.startswith(("grpc.", "grpc_tools")))
print("loaded:" + ",".join(loaded), flush=True)
'''


def test_descriptor_service_in_a_process_without_grpc(tmp_path: pathlib.Path, pb: Any, pb_grpc: Any) -> None:
    script = tmp_path / "serve_without_grpc.py"
    script.write_text(SERVER_SCRIPT)
    tests_dir = pathlib.Path(__file__).resolve().parent.parent
    generated = pathlib.Path(pb.__file__).resolve().parent
    src = tests_dir.parent / "src"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(generated), str(tests_dir), str(src), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(tmp_path),
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline().strip()
        if not first.isdigit():
            proc.kill()
            pytest.fail(f"server did not start: {first!r} {proc.communicate(timeout=TIMEOUT)}")
        with grpc.insecure_channel(f"localhost:{first}") as ch:
            stub = pb_grpc.EchoServiceStub(ch)
            assert stub.Unary(pb.EchoRequest(message="hi"), timeout=TIMEOUT).message == "hi"
            replies = list(stub.ServerStream(pb.EchoRequest(message="s", count=3), timeout=TIMEOUT))
            assert [r.index for r in replies] == [0, 1, 2]
            requests = [pb.EchoRequest(message=str(i), payload=b"xy") for i in range(4)]
            reply = stub.ClientStream(iter(requests), timeout=TIMEOUT)
            assert (reply.index, reply.payload) == (4, b"8")
            assert [r.message for r in stub.BidiStream(iter(requests), timeout=TIMEOUT)] == [
                "0",
                "1",
                "2",
                "3",
            ]
            with pytest.raises(grpc.RpcError) as info:
                stub.Unary(pb.EchoRequest(status=5, details="nope ✓"), timeout=TIMEOUT)
            assert info.value.code() is grpc.StatusCode.NOT_FOUND
            assert info.value.details() == "nope ✓"
            shout = ch.unary_unary("/raw.Shout/Shout")
            answer, call = shout.with_call(b"quiet", timeout=TIMEOUT)
            assert answer == b"QUIET"
            assert ("shouted", "yes") in tuple(call.trailing_metadata())
        out, err = proc.communicate("stop\n", timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out.strip() == "loaded:", (out, err)
