"""grpcio parity, each through grpcio's client against a served puregrpc server."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import puregrpc

from ._support import TIMEOUT, serve

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
