"""Generate and import the Python code for bench/echo.proto.

The code is generated at run time with grpcio-tools into bench/_gen/ (gitignored) and is
never committed. This module imports neither grpc nor grpcio-tools until asked to generate,
so servers run by another interpreter (``--runtime``) can use it with protobuf alone.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from types import ModuleType
from typing import Dict, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PROTO_FILE = os.path.join(BENCH_DIR, "echo.proto")
GEN_DIR = os.path.join(BENCH_DIR, "_gen")
SERVICE_NAME = "bench.Echo"
METHOD_PATH = "/bench.Echo/Unary"
SERVER_STREAM_PATH = "/bench.Echo/ServerStream"
CLIENT_STREAM_PATH = "/bench.Echo/ClientStream"
BIDI_PATH = "/bench.Echo/Bidi"
PAYLOAD_SIZE = 100
MAX_STREAM_SIZE = 4 * 1024 * 1024  # the largest payload ServerStream makes (grpc's default message limit)
_PATTERN = bytes(range(251))  # 251: a prime, so the pattern does not line up with frame sizes
_patterns: Dict[int, bytes] = {}


def pattern(size: int) -> bytes:
    """The payload of ``size`` bytes that the streaming methods send and expect: 0, 1, ... 250, 0, 1, ..."""
    block = _patterns.get(size)
    if block is None:
        if not 0 <= size <= MAX_STREAM_SIZE:
            raise ValueError(f"payload size {size} out of range")
        block = (_PATTERN * (size // len(_PATTERN) + 1))[:size]
        if len(_patterns) >= 16:
            _patterns.clear()
        _patterns[size] = block
    return block


def generate(out_dir: str = GEN_DIR) -> None:
    """Run `python -m grpc_tools.protoc` on echo.proto, writing into out_dir.

    Files are generated into a temporary folder first and then moved into place, so a
    process reading out_dir never sees half-written modules.
    """
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tmp-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{BENCH_DIR}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--descriptor_set_out={os.path.join(tmp, 'echo.desc')}",
            PROTO_FILE,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"protoc failed ({proc.returncode}): {proc.stderr.strip()}")
        for name in ("echo.desc", "echo_pb2.py", "echo_pb2_grpc.py"):
            os.replace(os.path.join(tmp, name), os.path.join(out_dir, name))


def is_stale(gen_dir: str = GEN_DIR) -> bool:
    """Whether the generated code is missing or older than echo.proto."""
    try:
        names = ("echo.desc", "echo_pb2.py", "echo_pb2_grpc.py")
        made = min(os.path.getmtime(os.path.join(gen_dir, n)) for n in names)
    except OSError:
        return True
    return made < os.path.getmtime(PROTO_FILE)


def load_pb2(gen_dir: str = GEN_DIR) -> ModuleType:
    """Import echo_pb2 (messages only; does not import grpc)."""
    if is_stale(gen_dir):
        generate(gen_dir)
    if gen_dir not in sys.path:
        sys.path.insert(0, gen_dir)
    try:
        import echo_pb2
    except Exception:
        # An older protobuf runtime than the generated code asks for (another interpreter's,
        # run.py --runtime): the same message classes, built from the descriptor instead.
        try:
            return pb2_from_descriptor(os.path.join(gen_dir, "echo.desc"))
        except Exception:
            pass
        raise
    module: ModuleType = echo_pb2
    return module


def pb2_from_descriptor(path: str) -> ModuleType:
    """A stand-in for echo_pb2 (DESCRIPTOR and the message classes) from protoc's descriptor set."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    with open(path, "rb") as f:
        files = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    module = ModuleType("echo_pb2")
    file_descriptor = pool.FindFileByName("echo.proto")
    setattr(module, "DESCRIPTOR", file_descriptor)  # noqa: B010 (a module built here)
    for name, descriptor in file_descriptor.message_types_by_name.items():
        get = getattr(message_factory, "GetMessageClass", None)
        cls = get(descriptor) if get else message_factory.MessageFactory(pool).GetPrototype(descriptor)
        setattr(module, name, cls)
    return module


def load(gen_dir: str = GEN_DIR) -> Tuple[ModuleType, ModuleType]:
    """Import (echo_pb2, echo_pb2_grpc). The second one imports grpc."""
    pb2 = load_pb2(gen_dir)
    import echo_pb2_grpc

    return pb2, echo_pb2_grpc


def grpc_frame(message: bytes, compressed: bool = False) -> bytes:
    """Wrap a serialized message in gRPC's 5-byte length prefix."""
    return struct.pack(">BI", 1 if compressed else 0, len(message)) + message


def request_body(payload_size: int = PAYLOAD_SIZE, pb2: ModuleType | None = None) -> bytes:
    """The length-prefixed EchoMsg that every benchmark request sends."""
    if pb2 is None:
        pb2 = load_pb2()
    msg = pb2.EchoMsg(payload=b"x" * payload_size)
    return grpc_frame(msg.SerializeToString())
