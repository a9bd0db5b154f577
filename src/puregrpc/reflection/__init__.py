"""Server reflection (grpc.reflection.v1 and v1alpha), built in; no grpcio needed.

``enable_server_reflection(service_names, server)`` mirrors grpcio-reflection:
both versions are served, ``list_services`` answers ``service_names`` (the
reflection services are added to them), and files and symbols are looked up
in the given descriptor ``pool`` or, by default, in protobuf's default pool
(where generated ``*_pb2`` modules register) and then in puregrpc's own pool
of built-in services (health, reflection).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Optional, Sequence

from google.protobuf import descriptor_pb2, descriptor_pool

from .. import _builtin_protos
from .._descriptors import add_servicer
from . import _proto
from ._proto import SERVICE_NAME, SERVICE_NAME_V1ALPHA

_NOT_FOUND = 5  # grpc.StatusCode.NOT_FOUND
_INVALID_ARGUMENT = 3


class _Lookup:
    """Files and symbols across an ordered list of descriptor pools."""

    def __init__(self, pools: Sequence[Any]) -> None:
        self.pools = list(pools)

    def _first(self, find: str, *args: Any) -> Any:
        for pool in self.pools:
            try:
                return getattr(pool, find)(*args)
            except KeyError:
                continue
        raise KeyError(args[0] if args else find)

    def file_by_name(self, name: str) -> Any:
        return self._first("FindFileByName", name)

    def file_containing_symbol(self, symbol: str) -> Any:
        try:
            return self._first("FindFileContainingSymbol", symbol)
        except KeyError:
            # Some pools (upb) do not index methods: "pkg.Service.Method".
            parent, _, method = symbol.rpartition(".")
            for pool in self.pools:
                try:
                    service = pool.FindServiceByName(parent)
                except KeyError:
                    continue
                if method in service.methods_by_name:
                    return service.file
            raise

    def message(self, full_name: str) -> Any:
        return self._first("FindMessageTypeByName", full_name)

    def extension(self, containing_type: str, number: int) -> Any:
        for pool in self.pools:
            try:
                return pool.FindExtensionByNumber(pool.FindMessageTypeByName(containing_type), number)
            except KeyError:
                continue
        raise KeyError(f"{containing_type}({number})")

    def extension_numbers(self, full_name: str) -> List[int]:
        for pool in self.pools:
            try:
                message = pool.FindMessageTypeByName(full_name)
            except KeyError:
                continue
            return sorted(ext.number for ext in pool.FindAllExtensions(message))
        raise KeyError(full_name)


def _serialized_with_deps(file: Any) -> List[bytes]:
    """``file`` and every file it depends on, transitively, each serialized once."""
    out: List[bytes] = []
    seen = set()
    stack = [file]
    while stack:
        current = stack.pop(0)
        if current.name in seen:
            continue
        seen.add(current.name)
        proto = descriptor_pb2.FileDescriptorProto()
        current.CopyToProto(proto)
        out.append(proto.SerializeToString())
        stack.extend(current.dependencies)
    return out


class ReflectionServicer:
    """``ServerReflectionInfo`` for one reflection version (``package``)."""

    def __init__(
        self,
        service_names: Iterable[str],
        pool: Optional[Any] = None,
        package: str = "grpc.reflection.v1",
    ) -> None:
        self._service_names = tuple(sorted(set(service_names)))
        pools = [pool] if pool is not None else [descriptor_pool.Default()]
        self._lookup = _Lookup([*pools, _builtin_protos.POOL])
        self._pb = _proto.messages(package)

    def _files(self, file: Any) -> Any:
        pb = self._pb
        return {
            "file_descriptor_response": pb.FileDescriptorResponse(file_descriptor_proto=_serialized_with_deps(file))
        }

    def _error(self, code: int, message: str) -> Any:
        return {"error_response": self._pb.ErrorResponse(error_code=code, error_message=message)}

    def _answer(self, request: Any) -> Any:
        pb = self._pb
        kind = request.WhichOneof("message_request")
        lookup = self._lookup
        try:
            if kind == "file_by_filename":
                return self._files(lookup.file_by_name(request.file_by_filename))
            if kind == "file_containing_symbol":
                return self._files(lookup.file_containing_symbol(request.file_containing_symbol))
            if kind == "file_containing_extension":
                ext = request.file_containing_extension
                return self._files(lookup.extension(ext.containing_type, ext.extension_number).file)
            if kind == "all_extension_numbers_of_type":
                name = request.all_extension_numbers_of_type
                numbers = lookup.extension_numbers(name)
                return {
                    "all_extension_numbers_response": pb.ExtensionNumberResponse(
                        base_type_name=name, extension_number=numbers
                    )
                }
            if kind == "list_services":
                services = [pb.ServiceResponse(name=name) for name in self._service_names]
                return {"list_services_response": pb.ListServiceResponse(service=services)}
        except KeyError:
            return self._error(_NOT_FOUND, "not found")
        return self._error(_INVALID_ARGUMENT, "no message_request set")

    def ServerReflectionInfo(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        for request in request_iterator:
            yield self._pb.ServerReflectionResponse(
                valid_host=request.host, original_request=request, **self._answer(request)
            )


def enable_server_reflection(service_names: Iterable[str], server: Any, pool: Optional[Any] = None) -> None:
    """Serve reflection v1 and v1alpha on ``server`` for ``service_names``, as grpcio-reflection."""
    names = [*service_names, SERVICE_NAME, SERVICE_NAME_V1ALPHA]
    for package in _proto.PACKAGES:
        descriptor = _proto.DESCRIPTORS[package].services_by_name["ServerReflection"]
        add_servicer(server, descriptor, ReflectionServicer(names, pool, package))


SERVICE_NAMES = (SERVICE_NAME, SERVICE_NAME_V1ALPHA)

__all__ = [
    "SERVICE_NAME",
    "SERVICE_NAMES",
    "SERVICE_NAME_V1ALPHA",
    "ReflectionServicer",
    "enable_server_reflection",
]
