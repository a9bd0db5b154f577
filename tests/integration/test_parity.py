"""grpcio parity, each through grpcio's client against a served puregrpc server."""

from __future__ import annotations

import collections
import inspect
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, List, Tuple

import grpc
import pytest

import puregrpc

from ._support import TIMEOUT, RawClient, Running, grpc_frame, grpc_messages, grpc_request, serve

# --- server(..., xds=...) ------------------------------------------------------------


def test_server_signature_matches_grpcio() -> None:
    ours = inspect.signature(puregrpc.server).parameters
    theirs = inspect.signature(grpc.server).parameters
    assert list(ours) == list(theirs)
    for name, param in theirs.items():
        assert ours[name].default == param.default, name


def test_server_xds_false_serves() -> None:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"echo:" + request

    handler = grpc.method_handlers_generic_handler("parity.Xds", {"Unary": grpc.unary_unary_rpc_method_handler(unary)})
    with serve(lambda s: s.add_generic_rpc_handlers((handler,)), xds=False) as running:
        ch = running.channel()
        try:
            assert ch.unary_unary("/parity.Xds/Unary")(b"hi", timeout=TIMEOUT) == b"echo:hi"
        finally:
            ch.close()


def test_server_xds_true_is_refused() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        with pytest.raises(ValueError, match="does not support xDS"):
            puregrpc.server(pool, xds=True)
        with pytest.raises(ValueError, match="does not support xDS"):
            puregrpc.server(pool, None, None, None, None, None, True)
    finally:
        pool.shutdown(wait=False)


# --- set_compression() after the response headers ------------------------------------

LATE = "parity.LateCompression"
BODY = b"compressible " * 200


def _late_gzip(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first:" + BODY  # sends the response headers: no grpc-encoding
    context.set_compression(grpc.Compression.Gzip)  # too late: ignored, as grpcio
    yield b"second:" + BODY
    yield b"third:" + BODY


def _late_deflate(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    context.send_initial_metadata((("k", "v"),))  # headers out before any message
    context.set_compression(grpc.Compression.Deflate)
    yield b"first:" + BODY
    yield b"second:" + BODY


def _late_handlers() -> grpc.GenericRpcHandler:
    us = grpc.unary_stream_rpc_method_handler
    return grpc.method_handlers_generic_handler(LATE, {"Gzip": us(_late_gzip), "Deflate": us(_late_deflate)})


@pytest.mark.parametrize("server_compression", [None, grpc.Compression.Gzip], ids=["plain", "gzip-default"])
@pytest.mark.parametrize("method", ["Gzip", "Deflate"])
def test_late_set_compression_is_ignored(server_compression: Any, method: str) -> None:
    with serve(handlers=[_late_handlers()], compression=server_compression) as running:
        ch = running.channel()
        try:
            call = ch.unary_stream(f"/{LATE}/{method}")(b"", timeout=TIMEOUT)
            replies = list(call)
            assert call.code() is grpc.StatusCode.OK
        finally:
            ch.close()
    expected = [b"first:" + BODY, b"second:" + BODY] + ([b"third:" + BODY] if method == "Gzip" else [])
    assert replies == expected


def test_late_set_compression_frames_match_headers() -> None:
    """On the wire: no grpc-encoding in the headers, so no message is flagged compressed."""
    with serve(handlers=[_late_handlers()]) as running, RawClient(running.port) as client:
        response = client.request(
            grpc_request(f"/{LATE}/Gzip", ("grpc-accept-encoding", "gzip,deflate")), body=grpc_frame(b"")
        )
    headers = dict(response.headers)
    assert "grpc-encoding" not in headers
    assert response.all_headers["grpc-status"] == "0"
    messages = grpc_messages(response.data)
    assert [compressed for compressed, _ in messages] == [False, False, False]


# --- context.code() returns the code object the handler passed -----------------------

CODES = "parity.Codes"


class CodeProbe:
    """Handlers that set a code; what ``context.code()`` returned goes to ``self.seen``."""

    def __init__(self) -> None:
        self.seen: Dict[str, Any] = {}

    def set_code(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        assert context.code() is None
        context.set_code(grpc.StatusCode.NOT_FOUND)
        self.seen["set_code"] = context.code()
        return b""

    def abort(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            context.abort(grpc.StatusCode.NOT_FOUND, "gone")
        finally:
            self.seen["abort"] = context.code()
        return b""  # never reached

    def abort_ok(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            context.abort(grpc.StatusCode.OK, "not an error")
        finally:
            self.seen["abort_ok"] = context.code()
        return b""  # never reached

    def ours(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        context.set_code(puregrpc.StatusCode.NOT_FOUND)
        self.seen["ours"] = context.code()
        return b""

    def handlers(self) -> grpc.GenericRpcHandler:
        uu = grpc.unary_unary_rpc_method_handler
        methods = {"SetCode": self.set_code, "Abort": self.abort, "AbortOk": self.abort_ok, "Ours": self.ours}
        return grpc.method_handlers_generic_handler(CODES, {name: uu(fn) for name, fn in methods.items()})


class CodeInterceptor(grpc.ServerInterceptor):
    """Reads ``context.code()`` after the handler returned or raised."""

    def __init__(self) -> None:
        self.seen: Dict[str, Any] = {}

    def intercept_service(self, continuation: Any, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        method = handler_call_details.method.rsplit("/", 1)[-1]

        def wrapped(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                result: bytes = behavior(request, context)
                return result
            finally:
                self.seen[method] = context.code()

        return grpc.unary_unary_rpc_method_handler(wrapped, handler.request_deserializer, handler.response_serializer)


@pytest.fixture(scope="module")
def codes() -> Iterator[Tuple[CodeProbe, CodeInterceptor, Running]]:
    probe, interceptor = CodeProbe(), CodeInterceptor()
    with serve(handlers=[probe.handlers()], interceptors=[interceptor]) as running:
        yield probe, interceptor, running


def _call_code(running: Running, method: str) -> grpc.StatusCode:
    ch = running.channel()
    try:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(f"/{CODES}/{method}")(b"", timeout=TIMEOUT)
        code: grpc.StatusCode = info.value.code()
        return code
    finally:
        ch.close()


@pytest.mark.parametrize(
    ("method", "key"),
    [("SetCode", "set_code"), ("Abort", "abort")],
)
def test_code_is_grpcio_status_code(codes: Tuple[CodeProbe, CodeInterceptor, Running], method: str, key: str) -> None:
    probe, interceptor, running = codes
    assert _call_code(running, method) is grpc.StatusCode.NOT_FOUND
    assert probe.seen[key] == grpc.StatusCode.NOT_FOUND
    assert probe.seen[key] is grpc.StatusCode.NOT_FOUND
    assert interceptor.seen[method] == grpc.StatusCode.NOT_FOUND


def test_code_after_abort_with_ok_is_grpcio_unknown(codes: Tuple[CodeProbe, CodeInterceptor, Running]) -> None:
    probe, interceptor, running = codes
    assert _call_code(running, "AbortOk") is grpc.StatusCode.UNKNOWN
    assert probe.seen["abort_ok"] is grpc.StatusCode.UNKNOWN
    assert interceptor.seen["AbortOk"] is grpc.StatusCode.UNKNOWN


def test_code_keeps_puregrpc_status_code(codes: Tuple[CodeProbe, CodeInterceptor, Running]) -> None:
    probe, interceptor, running = codes
    assert _call_code(running, "Ours") is grpc.StatusCode.NOT_FOUND
    assert probe.seen["ours"] is puregrpc.StatusCode.NOT_FOUND
    assert interceptor.seen["Ours"] is puregrpc.StatusCode.NOT_FOUND


# --- handler metadata: reserved keys dropped, invalid ones fail with INTERNAL ---------

META = "parity.Metadata"
# Fields the gRPC layer or HTTP/2 owns: a handler setting them must not reach the wire.
RESERVED = (
    ("te", "x"),
    ("content-length", "5"),
    ("content-type", "text/plain"),
    ("connection", "close"),
    ("keep-alive", "timeout=5"),
    ("proxy-connection", "close"),
    ("transfer-encoding", "chunked"),
    ("upgrade", "h2c"),
    ("grpc-status", "3"),
    ("grpc-message", "fake"),
    ("grpc-encoding", "gzip"),
    ("grpc-accept-encoding", "gzip"),
    ("grpc-timeout", "1S"),
)
RESERVED_KEYS = {key for key, _ in RESERVED}


class MetadataProbe:
    """The request (JSON) says what metadata to set: ``{"initial": [[k, v]], "trailing": [...]}``;
    ``-bin`` values are given as latin-1 text. Exceptions the handler saw go to ``self.seen``."""

    def __init__(self) -> None:
        self.seen: Dict[str, Any] = {}

    @staticmethod
    def _pairs(raw: List[List[str]]) -> List[Tuple[str, Any]]:
        return [(k, v.encode("latin-1") if k.endswith("-bin") else v) for k, v in raw]

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        spec = json.loads(request)
        if "trailing" in spec:
            context.set_trailing_metadata(self._pairs(spec["trailing"]))
        if "initial" in spec:
            try:
                context.send_initial_metadata(self._pairs(spec["initial"]))
            except Exception as exc:
                self.seen[spec.get("tag", "")] = exc
                raise
        if "abort" in spec:
            context.abort_with_status(_Status(grpc.StatusCode.NOT_FOUND, "gone", self._pairs(spec["abort"])))
        return b"done"

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        spec = json.loads(request)
        yield b"one"
        context.set_trailing_metadata(self._pairs(spec["trailing"]))
        yield b"two"

    def handlers(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            META,
            {
                "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            },
        )


class _Status(collections.namedtuple("_Status", ("code", "details", "trailing_metadata")), grpc.Status):
    pass


@pytest.fixture(scope="module")
def meta() -> Iterator[Tuple[MetadataProbe, Running]]:
    probe = MetadataProbe()
    with serve(handlers=[probe.handlers()]) as running:
        yield probe, running


def _unary(running: Running, spec: Dict[str, Any]) -> Tuple[Any, grpc.Call]:
    ch = running.channel()
    try:
        reply, call = ch.unary_unary(f"/{META}/Unary").with_call(json.dumps(spec).encode(), timeout=TIMEOUT)
        return reply, call
    finally:
        ch.close()


def _unary_error(running: Running, spec: Dict[str, Any]) -> grpc.RpcError:
    ch = running.channel()
    try:
        with pytest.raises(grpc.RpcError) as info:
            ch.unary_unary(f"/{META}/Unary")(json.dumps(spec).encode(), timeout=TIMEOUT)
        return info.value
    finally:
        ch.close()


def test_reserved_metadata_is_dropped(meta: Tuple[MetadataProbe, Running]) -> None:
    _, running = meta
    spec = {
        "initial": [*RESERVED, ("x-initial", "1"), ("x-blob-bin", "\x00\xff")],
        "trailing": [*RESERVED, ("x-trailing", "2"), ("grpc-retry-pushback-ms", "10")],
    }
    reply, call = _unary(running, spec)
    assert reply == b"done"
    assert call.code() is grpc.StatusCode.OK
    initial = dict(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    assert not RESERVED_KEYS & set(initial), initial
    assert not RESERVED_KEYS & set(trailing), trailing
    assert initial["x-initial"] == "1"
    assert initial["x-blob-bin"] == b"\x00\xff"
    assert trailing["x-trailing"] == "2"
    assert trailing["grpc-retry-pushback-ms"] == "10"  # other grpc- keys pass, as in grpcio


def test_reserved_metadata_never_reaches_the_wire(meta: Tuple[MetadataProbe, Running]) -> None:
    _, running = meta
    spec = {"initial": [*RESERVED, ("x-initial", "1")], "trailing": [*RESERVED, ("x-trailing", "2")]}
    with RawClient(running.port) as client:
        response = client.request(grpc_request(f"/{META}/Unary"), body=grpc_frame(json.dumps(spec).encode()))
    assert response.ended and response.reset is None
    headers = [k for k, _ in response.headers]
    trailers = [k for k, _ in response.trailers]
    assert headers.count("content-type") == 1 and dict(response.headers)["content-type"] == "application/grpc"
    assert not (RESERVED_KEYS - {"content-type", "grpc-accept-encoding"}) & set(headers), headers
    assert headers.count("grpc-accept-encoding") == 1
    assert not (RESERVED_KEYS - {"grpc-status"}) & set(trailers), trailers
    assert trailers.count("grpc-status") == 1 and dict(response.trailers)["grpc-status"] == "0"
    assert ("x-initial", "1") in response.headers
    assert ("x-trailing", "2") in response.trailers
    assert [payload for _, payload in grpc_messages(response.data)] == [b"done"]


def test_abort_with_status_drops_reserved_keeps_details(meta: Tuple[MetadataProbe, Running]) -> None:
    _, running = meta
    details_bin = "\x08\x05\x12\x03abc"
    error = _unary_error(running, {"abort": [*RESERVED, ("grpc-status-details-bin", details_bin), ("x-extra", "x")]})
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert error.details() == "gone"
    trailing = dict(error.trailing_metadata())
    assert not RESERVED_KEYS & set(trailing), trailing
    assert trailing["x-extra"] == "x"
    assert trailing["grpc-status-details-bin"] == details_bin.encode("latin-1")


BAD_KEYS = ["bad\n", "Upper", "sp ace", "", "colon:", ":path", "k\x00"]
BAD_VALUES = ["v\n", "a\r\nb", "caf\u00e9", "\x01", "tab\t", "\x7f"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_trailing_key_fails_internal(meta: Tuple[MetadataProbe, Running], key: str) -> None:
    _, running = meta
    error = _unary_error(running, {"trailing": [("x-fine", "1"), (key, "v")]})
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "invalid trailing metadata" in error.details()
    assert repr(key) in error.details()


@pytest.mark.parametrize("value", BAD_VALUES)
def test_invalid_trailing_value_fails_internal(meta: Tuple[MetadataProbe, Running], value: str) -> None:
    _, running = meta
    error = _unary_error(running, {"trailing": [("x-named", value)]})
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "'x-named'" in error.details()
    assert not dict(error.trailing_metadata())


@pytest.mark.parametrize("key", BAD_KEYS)
def test_invalid_initial_key_fails_internal(meta: Tuple[MetadataProbe, Running], key: str) -> None:
    probe, running = meta
    tag = f"key-{key!r}"
    error = _unary_error(running, {"tag": tag, "initial": [(key, "v")]})
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "invalid initial metadata" in error.details()
    assert repr(key) in error.details()
    assert isinstance(probe.seen[tag], ValueError)  # what send_initial_metadata raised before


@pytest.mark.parametrize("value", BAD_VALUES)
def test_invalid_initial_value_fails_internal(meta: Tuple[MetadataProbe, Running], value: str) -> None:
    _, running = meta
    error = _unary_error(running, {"initial": [("x-fine", "1"), ("x-named", value)]})
    assert error.code() is grpc.StatusCode.INTERNAL
    assert "'x-named'" in error.details()
    assert "x-fine" not in dict(error.initial_metadata())


def test_invalid_trailing_after_messages_fails_internal(meta: Tuple[MetadataProbe, Running]) -> None:
    _, running = meta
    ch = running.channel()
    try:
        call = ch.unary_stream(f"/{META}/Stream")(json.dumps({"trailing": [("bad\n", "v")]}).encode(), timeout=TIMEOUT)
        received = []
        with pytest.raises(grpc.RpcError) as info:
            for message in call:
                received.append(message)
    finally:
        ch.close()
    assert received == [b"one", b"two"]
    assert info.value.code() is grpc.StatusCode.INTERNAL
    assert "'bad\\n'" in info.value.details()
