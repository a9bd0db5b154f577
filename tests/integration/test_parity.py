"""grpcio parity, each through grpcio's client against a served puregrpc server."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterator, Tuple

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
