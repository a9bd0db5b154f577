"""The interop schema (``grpc/testing/test.proto`` and its imports), built in code.

The official interop server serves ``grpc.testing.TestService`` from
``test.proto``, which imports ``empty.proto`` and ``messages.proto``. They are
written here as ``FileDescriptorProto`` s, as the health and reflection schemas
are (``puregrpc._builtin_protos``), so the interop server needs no ``.proto``
files, no protoc and no grpcio-tools at run time. The test suite compiles the
official files (Debian's ``grpc-proto``, or ``PUREGRPC_GRPC_PROTO``) and checks
that these are identical to them. They load into a private descriptor pool, so
they never clash with generated ``*_pb2`` modules of the same files.

``load(path)`` serves the schema compiled from a directory of ``.proto`` files
instead (the interop server's ``--proto_path``, e.g. a newer copy of grpc/grpc's
``src/proto``); that needs grpcio-tools or a ``protoc`` binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from google.protobuf import descriptor_pb2, descriptor_pool

from .._builtin_protos import F, _json_name
from .._descriptors import _message_class

PACKAGE = "grpc.testing"
EMPTY_PROTO = "grpc/testing/empty.proto"
MESSAGES_PROTO = "grpc/testing/messages.proto"
TEST_PROTO = "grpc/testing/test.proto"
DEFAULT_PROTO_ROOT = "/usr/share/grpc-proto"  # Debian's grpc-proto


class ProtoNotFound(RuntimeError):
    pass


# -- the schema, written as data ------------------------------------------------
#
# A field's type is a scalar name ("int32"), a message or enum name relative to the
# package ("Payload", "ClientConfigureRequest.RpcType"), either of them after
# "repeated ", or "map<KEY, VALUE>". A message's body lists its fields, nested
# messages and nested enums in the order the .proto declares them (protoc keeps
# nested messages and the entry messages of map fields in that order).


class _Field(NamedTuple):
    name: str
    number: int
    type: str
    deprecated: bool = False


class _Enum(NamedTuple):
    name: str
    values: Tuple[str, ...]  # numbered from 0


class _Message(NamedTuple):
    name: str
    body: Tuple[Any, ...] = ()  # _Field, _Message, _Enum


class _Method(NamedTuple):
    name: str
    request: str
    response: str
    client_streaming: bool = False
    server_streaming: bool = False
    empty_options: bool = False  # declared with "{}": protoc records an empty options message


class _Service(NamedTuple):
    name: str
    methods: Tuple[_Method, ...]


_Item = Union[_Field, _Message, _Enum]

_MESSAGES: Tuple[_Item, ...] = (
    _Message("BoolValue", (_Field("value", 1, "bool"),)),
    _Enum("PayloadType", ("COMPRESSABLE",)),
    _Message("Payload", (_Field("type", 1, "PayloadType"), _Field("body", 2, "bytes"))),
    _Message("EchoStatus", (_Field("code", 1, "int32"), _Field("message", 2, "string"))),
    _Enum("GrpclbRouteType", ("GRPCLB_ROUTE_TYPE_UNKNOWN", "GRPCLB_ROUTE_TYPE_FALLBACK", "GRPCLB_ROUTE_TYPE_BACKEND")),
    _Message(
        "SimpleRequest",
        (
            _Field("response_type", 1, "PayloadType"),
            _Field("response_size", 2, "int32"),
            _Field("payload", 3, "Payload"),
            _Field("fill_username", 4, "bool"),
            _Field("fill_oauth_scope", 5, "bool"),
            _Field("response_compressed", 6, "BoolValue"),
            _Field("response_status", 7, "EchoStatus"),
            _Field("expect_compressed", 8, "BoolValue"),
            _Field("fill_server_id", 9, "bool"),
            _Field("fill_grpclb_route_type", 10, "bool"),
            _Field("orca_per_query_report", 11, "TestOrcaReport"),
            _Field("orca_oob_report", 12, "TestOrcaReport"),
        ),
    ),
    _Message(
        "SimpleResponse",
        (
            _Field("payload", 1, "Payload"),
            _Field("username", 2, "string"),
            _Field("oauth_scope", 3, "string"),
            _Field("server_id", 4, "string"),
            _Field("grpclb_route_type", 5, "GrpclbRouteType"),
            _Field("hostname", 6, "string"),
        ),
    ),
    _Message(
        "StreamingInputCallRequest",
        (_Field("payload", 1, "Payload"), _Field("expect_compressed", 2, "BoolValue")),
    ),
    _Message("StreamingInputCallResponse", (_Field("aggregated_payload_size", 1, "int32"),)),
    _Message(
        "ResponseParameters",
        (_Field("size", 1, "int32"), _Field("interval_us", 2, "int32"), _Field("compressed", 3, "BoolValue")),
    ),
    _Message(
        "StreamingOutputCallRequest",
        (
            _Field("response_type", 1, "PayloadType"),
            _Field("response_parameters", 2, "repeated ResponseParameters"),
            _Field("payload", 3, "Payload"),
            _Field("response_status", 7, "EchoStatus"),
            _Field("orca_oob_report", 8, "TestOrcaReport"),
        ),
    ),
    _Message("StreamingOutputCallResponse", (_Field("payload", 1, "Payload"),)),
    _Message("ReconnectParams", (_Field("max_reconnect_backoff_ms", 1, "int32"),)),
    _Message("ReconnectInfo", (_Field("passed", 1, "bool"), _Field("backoff_ms", 2, "repeated int32"))),
    _Message("LoadBalancerStatsRequest", (_Field("num_rpcs", 1, "int32"), _Field("timeout_sec", 2, "int32"))),
    _Message(
        "LoadBalancerStatsResponse",
        (
            _Message("RpcsByPeer", (_Field("rpcs_by_peer", 1, "map<string, int32>"),)),
            _Field("rpcs_by_peer", 1, "map<string, int32>"),
            _Field("num_failures", 2, "int32"),
            _Field("rpcs_by_method", 3, "map<string, LoadBalancerStatsResponse.RpcsByPeer>"),
        ),
    ),
    _Message("LoadBalancerAccumulatedStatsRequest"),
    _Message(
        "LoadBalancerAccumulatedStatsResponse",
        (
            _Field("num_rpcs_started_by_method", 1, "map<string, int32>", deprecated=True),
            _Field("num_rpcs_succeeded_by_method", 2, "map<string, int32>", deprecated=True),
            _Field("num_rpcs_failed_by_method", 3, "map<string, int32>", deprecated=True),
            _Message(
                "MethodStats",
                (_Field("rpcs_started", 1, "int32"), _Field("result", 2, "map<int32, int32>")),
            ),
            _Field("stats_per_method", 4, "map<string, LoadBalancerAccumulatedStatsResponse.MethodStats>"),
        ),
    ),
    _Message(
        "ClientConfigureRequest",
        (
            _Enum("RpcType", ("EMPTY_CALL", "UNARY_CALL")),
            _Message(
                "Metadata",
                (
                    _Field("type", 1, "ClientConfigureRequest.RpcType"),
                    _Field("key", 2, "string"),
                    _Field("value", 3, "string"),
                ),
            ),
            _Field("types", 1, "repeated ClientConfigureRequest.RpcType"),
            _Field("metadata", 2, "repeated ClientConfigureRequest.Metadata"),
            _Field("timeout_sec", 3, "int32"),
        ),
    ),
    _Message("ClientConfigureResponse"),
    _Message(
        "TestOrcaReport",
        (
            _Field("cpu_utilization", 1, "double"),
            _Field("memory_utilization", 2, "double"),
            _Field("request_cost", 3, "map<string, double>"),
            _Field("utilization", 4, "map<string, double>"),
        ),
    ),
)

_EMPTY = "Empty"
_SERVICES: Tuple[_Service, ...] = (
    _Service(
        "TestService",
        (
            _Method("EmptyCall", _EMPTY, _EMPTY),
            _Method("UnaryCall", "SimpleRequest", "SimpleResponse"),
            _Method("CacheableUnaryCall", "SimpleRequest", "SimpleResponse"),
            _Method("StreamingOutputCall", "StreamingOutputCallRequest", "StreamingOutputCallResponse", False, True),
            _Method("StreamingInputCall", "StreamingInputCallRequest", "StreamingInputCallResponse", True, False),
            _Method("FullDuplexCall", "StreamingOutputCallRequest", "StreamingOutputCallResponse", True, True),
            _Method("HalfDuplexCall", "StreamingOutputCallRequest", "StreamingOutputCallResponse", True, True),
            _Method("UnimplementedCall", _EMPTY, _EMPTY),
        ),
    ),
    _Service("UnimplementedService", (_Method("UnimplementedCall", _EMPTY, _EMPTY),)),
    _Service(
        "ReconnectService", (_Method("Start", "ReconnectParams", _EMPTY), _Method("Stop", _EMPTY, "ReconnectInfo"))
    ),
    _Service(
        "LoadBalancerStatsService",
        (
            _Method("GetClientStats", "LoadBalancerStatsRequest", "LoadBalancerStatsResponse", empty_options=True),
            _Method(
                "GetClientAccumulatedStats",
                "LoadBalancerAccumulatedStatsRequest",
                "LoadBalancerAccumulatedStatsResponse",
                empty_options=True,
            ),
        ),
    ),
    _Service(
        "XdsUpdateHealthService", (_Method("SetServing", _EMPTY, _EMPTY), _Method("SetNotServing", _EMPTY, _EMPTY))
    ),
    _Service(
        "XdsUpdateClientConfigureService", (_Method("Configure", "ClientConfigureRequest", "ClientConfigureResponse"),)
    ),
)

_JAVA_PACKAGE = "io.grpc.testing.integration"

# -- building FileDescriptorProtos from the data ----------------------------------

_SCALARS = {
    "double": F.TYPE_DOUBLE,
    "float": F.TYPE_FLOAT,
    "int64": F.TYPE_INT64,
    "uint64": F.TYPE_UINT64,
    "int32": F.TYPE_INT32,
    "bool": F.TYPE_BOOL,
    "string": F.TYPE_STRING,
    "bytes": F.TYPE_BYTES,
    "uint32": F.TYPE_UINT32,
}


def _enum_names(items: Sequence[_Item], prefix: str = "") -> List[str]:
    """Every enum's name relative to the package, nested ones included."""
    names: List[str] = []
    for item in items:
        if isinstance(item, _Enum):
            names.append(prefix + item.name)
        elif isinstance(item, _Message):
            names.extend(_enum_names(item.body, f"{prefix}{item.name}."))
    return names


_ENUMS = frozenset(_enum_names(_MESSAGES))


def _camel(name: str) -> str:
    """A map field's entry message name, as protoc forms it: ``rpcs_by_peer`` -> ``RpcsByPeer``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _set_type(field: descriptor_pb2.FieldDescriptorProto, type_text: str) -> None:
    scalar = _SCALARS.get(type_text)
    if scalar is not None:
        field.type = scalar
    else:
        field.type = F.TYPE_ENUM if type_text in _ENUMS else F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{type_text}"


def _add_field(
    message: descriptor_pb2.DescriptorProto, path: str, spec: _Field
) -> Optional[descriptor_pb2.DescriptorProto]:
    """Add ``spec`` to ``message`` (full name ``path``); a map field's entry message is returned."""
    field = message.field.add(name=spec.name, number=spec.number, json_name=_json_name(spec.name))
    type_text = spec.type
    entry: Optional[descriptor_pb2.DescriptorProto] = None
    if type_text.startswith("map<"):
        key, value = (part.strip() for part in type_text[4:-1].split(","))
        entry = descriptor_pb2.DescriptorProto(name=f"{_camel(spec.name)}Entry")
        for number, (name, part) in enumerate((("key", key), ("value", value)), start=1):
            entry_field = entry.field.add(name=name, number=number, label=F.LABEL_OPTIONAL, json_name=name)
            _set_type(entry_field, part)
        entry.options.map_entry = True
        field.label = F.LABEL_REPEATED
        field.type = F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{path}.{entry.name}"
    else:
        repeated = type_text.startswith("repeated ")
        field.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        _set_type(field, type_text[len("repeated ") :] if repeated else type_text)
    if spec.deprecated:
        field.options.deprecated = True
    return entry


def _fill_enum(enum: descriptor_pb2.EnumDescriptorProto, spec: _Enum) -> None:
    enum.name = spec.name
    for number, name in enumerate(spec.values):
        enum.value.add(name=name, number=number)


def _fill_message(message: descriptor_pb2.DescriptorProto, spec: _Message, path: str) -> None:
    message.name = spec.name
    for item in spec.body:
        if isinstance(item, _Field):
            entry = _add_field(message, path, item)
            if entry is not None:
                message.nested_type.add().CopyFrom(entry)
        elif isinstance(item, _Message):
            _fill_message(message.nested_type.add(), item, f"{path}.{item.name}")
        else:
            _fill_enum(message.enum_type.add(), item)


def _new_file(name: str) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=name, package=PACKAGE, syntax="proto3")
    file.options.java_package = _JAVA_PACKAGE
    return file


def _empty_file() -> descriptor_pb2.FileDescriptorProto:
    file = _new_file(EMPTY_PROTO)
    file.message_type.add(name=_EMPTY)
    file.options.java_outer_classname = "EmptyProtos"
    return file


def _messages_file() -> descriptor_pb2.FileDescriptorProto:
    file = _new_file(MESSAGES_PROTO)
    for item in _MESSAGES:
        if isinstance(item, _Message):
            _fill_message(file.message_type.add(), item, item.name)
        elif isinstance(item, _Enum):
            _fill_enum(file.enum_type.add(), item)
    return file


def _test_file() -> descriptor_pb2.FileDescriptorProto:
    file = _new_file(TEST_PROTO)
    file.dependency.extend([EMPTY_PROTO, MESSAGES_PROTO])
    for spec in _SERVICES:
        service = file.service.add(name=spec.name)
        for method_spec in spec.methods:
            method = service.method.add(
                name=method_spec.name,
                input_type=f".{PACKAGE}.{method_spec.request}",
                output_type=f".{PACKAGE}.{method_spec.response}",
            )
            if method_spec.client_streaming:
                method.client_streaming = True
            if method_spec.server_streaming:
                method.server_streaming = True
            if method_spec.empty_options:
                method.options.SetInParent()
    return file


def file_descriptor_protos() -> List[descriptor_pb2.FileDescriptorProto]:
    """``empty.proto``, ``messages.proto`` and ``test.proto``, dependencies first (new copies)."""
    return [_empty_file(), _messages_file(), _test_file()]


def file_descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """The three files as a ``FileDescriptorSet`` (what ``protoc --descriptor_set_out`` writes)."""
    return descriptor_pb2.FileDescriptorSet(file=file_descriptor_protos())


# -- compiling .proto files (--proto_path, and the tests' comparison) -------------


def proto_root(path: str) -> str:
    """``path`` if it holds ``grpc/testing/test.proto``; else ProtoNotFound."""
    if not os.path.isfile(os.path.join(path, TEST_PROTO)):
        raise ProtoNotFound(f"{TEST_PROTO} not found under {path!r}: name a copy of grpc/grpc's src/proto")
    return path


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
                    "compiling .proto files needs grpcio-tools (pip install grpcio-tools) "
                    "or a protoc binary (apt-get install protobuf-compiler)"
                ) from None
            status = subprocess.run([binary, *args], stdout=sys.stderr, check=False).returncode
        if status != 0:
            raise ProtoNotFound(f"protoc failed on {proto} under {root!r}")
        with open(out, "rb") as handle:
            return descriptor_pb2.FileDescriptorSet.FromString(handle.read())


# -- the loaded schema --------------------------------------------------------------


class InteropProtos:
    """Descriptors and message classes of ``grpc.testing``, from a private pool."""

    def __init__(self, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
        self.pool = descriptor_pool.DescriptorPool()
        for file in files:  # dependencies first
            self.pool.Add(file)
        self.file = self.pool.FindFileByName(TEST_PROTO)
        self.test_service = self.pool.FindServiceByName(f"{PACKAGE}.TestService")
        self.unimplemented_service = self.pool.FindServiceByName(f"{PACKAGE}.UnimplementedService")
        self._classes: Dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        """``protos.SimpleRequest`` -> the message class of ``grpc.testing.SimpleRequest``."""
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            cls = self._classes[name]
        except KeyError:
            try:
                descriptor = self.pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
            except KeyError:
                raise AttributeError(name) from None
            cls = self._classes[name] = _message_class(descriptor)
        return cls


_cache: Dict[Optional[str], InteropProtos] = {}
_lock = threading.Lock()


def load(path: Optional[str] = None) -> InteropProtos:
    """The interop schema, loaded once: built in code, or compiled from the ``.proto``
    files under ``path`` (a directory holding ``grpc/testing/test.proto``) if given."""
    root = None if path is None else proto_root(path)
    with _lock:
        protos = _cache.get(root)
        if protos is None:
            files = file_descriptor_protos() if root is None else list(compile_descriptor_set(root).file)
            protos = _cache[root] = InteropProtos(files)
        return protos
