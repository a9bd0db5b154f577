"""Descriptors of the standard services, built in code into a private pool.

The protobuf package ships no health or reflection protos, and generated
``*_pb2.py`` modules pin the protobuf version that generated them, so the
schemas are written here as ``FileDescriptorProto`` s (checked field by field
against the official ``.proto`` files by the test suite). They live in a
private pool: grpcio-health-checking or grpcio-reflection may load the same
files into the default pool in the same process without a clash.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Sequence, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool

from ._descriptors import _message_class

F = descriptor_pb2.FieldDescriptorProto
POOL = descriptor_pool.DescriptorPool()
_lock = threading.Lock()
_classes: Dict[str, Any] = {}

# A field: (name, number, type, type_name or None, repeated, oneof index or None)
Field = Tuple[str, int, int, Optional[str], bool, Optional[int]]


def field(
    name: str,
    number: int,
    ftype: int,
    type_name: Optional[str] = None,
    repeated: bool = False,
    oneof: Optional[int] = None,
) -> Field:
    return (name, number, ftype, type_name, repeated, oneof)


def _json_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def add_message(
    file: descriptor_pb2.FileDescriptorProto,
    name: str,
    fields: Sequence[Field],
    oneofs: Sequence[str] = (),
) -> descriptor_pb2.DescriptorProto:
    message = file.message_type.add(name=name)
    for oneof in oneofs:
        message.oneof_decl.add(name=oneof)
    for fname, number, ftype, type_name, repeated, oneof_index in fields:
        proto = message.field.add(
            name=fname,
            number=number,
            type=ftype,
            label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL,
            json_name=_json_name(fname),
        )
        if type_name is not None:
            proto.type_name = type_name
        if oneof_index is not None:
            proto.oneof_index = oneof_index
    return message


def add_method(
    service: descriptor_pb2.ServiceDescriptorProto,
    name: str,
    request: str,
    response: str,
    client_streaming: bool = False,
    server_streaming: bool = False,
) -> None:
    method = service.method.add(name=name, input_type=request, output_type=response)
    if client_streaming:
        method.client_streaming = True
    if server_streaming:
        method.server_streaming = True


def register(file: descriptor_pb2.FileDescriptorProto) -> Any:
    """Add ``file`` to the private pool (once) and return its FileDescriptor."""
    with _lock:
        try:
            return POOL.FindFileByName(file.name)
        except KeyError:
            POOL.Add(file)
            return POOL.FindFileByName(file.name)


def message_class(full_name: str) -> Any:
    with _lock:
        cls = _classes.get(full_name)
        if cls is None:
            cls = _classes[full_name] = _message_class(POOL.FindMessageTypeByName(full_name))
        return cls
