"""grpcio parity, each through grpcio's client against a served puregrpc server."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import grpc
import pytest

import puregrpc

from ._support import TIMEOUT, RawClient, grpc_frame, grpc_messages, grpc_request, serve

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
