"""The official interop protos (``grpc/testing/test.proto`` and its imports), loaded at run time.

The ``.proto`` files are not copied into puregrpc: they come from the Debian
package ``grpc-proto`` (``/usr/share/grpc-proto``) or any directory given with
``--proto_path`` / ``PUREGRPC_GRPC_PROTO``. They are compiled to a
``FileDescriptorSet`` by grpcio-tools' protoc (or a ``protoc`` binary) and
loaded into a private descriptor pool, so they never clash with generated
``*_pb2`` modules of the same files in the default pool.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Dict, Optional

from google.protobuf import descriptor_pb2, descriptor_pool

from .._descriptors import _message_class

DEFAULT_PROTO_ROOT = "/usr/share/grpc-proto"
TEST_PROTO = "grpc/testing/test.proto"


class ProtoNotFound(RuntimeError):
    pass


def proto_root(path: Optional[str] = None) -> str:
    root = path or os.environ.get("PUREGRPC_GRPC_PROTO") or DEFAULT_PROTO_ROOT
    if not os.path.isfile(os.path.join(root, TEST_PROTO)):
        raise ProtoNotFound(
            f"{TEST_PROTO} not found under {root!r}: install the Debian package grpc-proto "
            "or pass --proto_path (or PUREGRPC_GRPC_PROTO) naming a copy of grpc/grpc's src/proto"
        )
    return root


def compile_descriptor_set(root: str, proto: str = TEST_PROTO) -> descriptor_pb2.FileDescriptorSet:
    """Compile ``proto`` (relative to ``root``) and its imports to a FileDescriptorSet."""
    with tempfile.TemporaryDirectory(prefix="puregrpc-proto-") as tmp:
        out = os.path.join(tmp, "set.pb")
        args = [
            f"-I{root}",
            f"--descriptor_set_out={out}",
            "--include_imports",
            os.path.join(root, proto),
        ]
        try:
            from grpc_tools import protoc  # type: ignore[import-not-found,import-untyped,unused-ignore]

            status = protoc.main(["protoc", *args])
        except ImportError:
            binary = shutil.which("protoc")
            if binary is None:
                raise ProtoNotFound(
                    "compiling the interop protos needs grpcio-tools (pip install grpcio-tools) "
                    "or a protoc binary (apt-get install protobuf-compiler)"
                ) from None
            status = subprocess.run([binary, *args], stdout=sys.stderr, check=False).returncode
        if status != 0:
            raise ProtoNotFound(f"protoc failed on {proto} under {root!r}")
        with open(out, "rb") as handle:
            return descriptor_pb2.FileDescriptorSet.FromString(handle.read())


class InteropProtos:
    """Descriptors and message classes of ``grpc.testing``, from a private pool."""

    def __init__(self, root: str) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        for file in compile_descriptor_set(root).file:
            self.pool.Add(file)
        self.file = self.pool.FindFileByName(TEST_PROTO)
        self.test_service = self.pool.FindServiceByName("grpc.testing.TestService")
        self.unimplemented_service = self.pool.FindServiceByName("grpc.testing.UnimplementedService")
        self._classes: Dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        """``protos.SimpleRequest`` -> the message class of ``grpc.testing.SimpleRequest``."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            cls = self._classes[name]
        except KeyError:
            try:
                descriptor = self.pool.FindMessageTypeByName(f"grpc.testing.{name}")
            except KeyError:
                raise AttributeError(name) from None
            cls = self._classes[name] = _message_class(descriptor)
        return cls


_cache: Dict[str, InteropProtos] = {}
_lock = threading.Lock()


def load(path: Optional[str] = None) -> InteropProtos:
    """The interop protos from ``path`` (default: grpc-proto's directory), loaded once."""
    root = proto_root(path)
    with _lock:
        protos = _cache.get(root)
        if protos is None:
            protos = _cache[root] = InteropProtos(root)
        return protos
