"""Message size options, maximum_concurrent_rpcs and compression (checked on the wire)."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from typing import Any, AsyncIterator, List

import grpc
import pytest

from ._support import TIMEOUT, Events, LoopEvent, error_of, generic, method, raw_unary, wait_for

BODY = b"compressible " * 400  # 5200 bytes, compresses well


def _sized_handlers(calls: List[bytes]) -> grpc.GenericRpcHandler:
    async def size(request: bytes, context: Any) -> bytes:
        calls.append(request[:1])
        return b"r" * int(request.split(b";")[0])

    return generic({"Size": grpc.unary_unary_rpc_method_handler(size)})


def test_max_receive_message_length(served: Any) -> None:
    calls: List[bytes] = []
    options = [("grpc.max_receive_message_length", 1024)]
    with served(_sized_handlers(calls), options=options) as s, s.open_channel() as ch:
        call = ch.unary_unary(method("Size"))
        assert call(b"10;" + b"x" * 1000, timeout=TIMEOUT) == b"r" * 10
        err = error_of(lambda: call(b"10;" + b"x" * 2000, timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert call(b"3;", timeout=TIMEOUT) == b"rrr"  # the connection and server are fine
    assert len(calls) == 2, "the handler never sees the oversized request"


def test_max_send_message_length(served: Any) -> None:
    options = [("grpc.max_send_message_length", 1024)]
    with served(_sized_handlers([]), options=options) as s, s.open_channel() as ch:
        call = ch.unary_unary(method("Size"))
        assert len(call(b"1000", timeout=TIMEOUT)) == 1000
        err = error_of(lambda: call(b"2000", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert call(b"1", timeout=TIMEOUT) == b"r"


def test_default_receive_limit_is_4_mib(served: Any) -> None:
    with served(_sized_handlers([])) as s, s.open_channel() as ch:
        call = ch.unary_unary(method("Size"))
        assert call(b"1;" + b"x" * (3 * 1024 * 1024), timeout=TIMEOUT) == b"r"
        err = error_of(lambda: call(b"1;" + b"x" * (4 * 1024 * 1024 + 10), timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_maximum_concurrent_rpcs(served: Any) -> None:
    events = Events()
    release = LoopEvent()

    async def hold(request: bytes, context: Any) -> bytes:
        events.add("held")
        await asyncio.wait_for(release.wait(), TIMEOUT)
        return b"held"

    handlers = generic({"Hold": grpc.unary_unary_rpc_method_handler(hold)})
    with served(handlers, maximum_concurrent_rpcs=1) as s, s.open_channel() as ch:
        call = ch.unary_unary(method("Hold"))
        first = call.future(b"", timeout=TIMEOUT)
        assert events.wait_for("held")
        err = error_of(lambda: call(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        s.loop.loop.call_soon_threadsafe(release.set)
        assert first.result(TIMEOUT) == b"held"
        # capacity is back (a server may count the call as ended a moment after its client does)
        assert wait_for(lambda: _succeeds(lambda: call(b"", timeout=TIMEOUT)), 5.0)


def _succeeds(fn: Any) -> bool:
    try:
        fn()
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
        return False
    return True


# --- compression --------------------------------------------------------------------


def _compression_handlers(aio: Any) -> grpc.GenericRpcHandler:
    async def plain(request: bytes, context: Any) -> bytes:
        return BODY

    async def set_gzip(request: bytes, context: Any) -> bytes:
        context.set_compression(grpc.Compression.Gzip)
        return BODY

    async def set_none(request: bytes, context: Any) -> bytes:
        context.set_compression(grpc.Compression.NoCompression)
        return BODY

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        context.set_compression(grpc.Compression.Gzip)
        yield BODY
        context.disable_next_message_compression()
        yield BODY
        yield BODY

    async def length(request: bytes, context: Any) -> bytes:
        return str(len(request)).encode() + b":" + request[:12]

    async def lengths(request_iterator: AsyncIterator[bytes], context: Any) -> bytes:
        return b",".join([str(len(r)).encode() async for r in request_iterator])

    return generic(
        {
            "Plain": grpc.unary_unary_rpc_method_handler(plain),
            "SetGzip": grpc.unary_unary_rpc_method_handler(set_gzip),
            "SetNone": grpc.unary_unary_rpc_method_handler(set_none),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Length": grpc.unary_unary_rpc_method_handler(length),
            "Lengths": grpc.stream_unary_rpc_method_handler(lengths),
        }
    )


def _streamed(port: int, name: str) -> Any:
    return raw_unary(port, method(name), b"", [("grpc-accept-encoding", "identity,deflate,gzip")])


def _decompress(response: Any) -> List[bytes]:
    encoding = response.header("grpc-encoding")
    out = []
    for flag, payload in response.messages():
        if flag:
            assert encoding in ("gzip", "deflate"), response.headers
            payload = gzip.decompress(payload) if encoding == "gzip" else zlib.decompress(payload)
        out.append(payload)
    return out


def test_no_compression_by_default(served: Any, aio: Any) -> None:
    with served(_compression_handlers(aio)) as s:
        response = _streamed(s.port, "Plain")
        assert response.header("grpc-status") == "0"
        assert [flag for flag, _ in response.messages()] == [0]
        assert _decompress(response) == [BODY]


def test_server_wide_compression(served: Any, aio: Any) -> None:
    with served(_compression_handlers(aio), compression=grpc.Compression.Gzip) as s:
        response = _streamed(s.port, "Plain")
        assert response.header("grpc-status") == "0"
        assert response.header("grpc-encoding") == "gzip"
        flags = [flag for flag, _ in response.messages()]
        assert flags == [1]
        assert _decompress(response) == [BODY]
        assert len(response.data) < len(BODY) // 4
        # and grpcio's client reads it
        with s.open_channel() as ch:
            assert ch.unary_unary(method("Plain"))(b"", timeout=TIMEOUT) == BODY


@pytest.mark.grpcaio_wrong("context.set_compression(NoCompression) in a unary handler is ignored: still compressed")
def test_server_wide_compression_overridden_by_the_handler(served: Any, aio: Any) -> None:
    with served(_compression_handlers(aio), compression=grpc.Compression.Gzip) as s:
        response = _streamed(s.port, "SetNone")
        assert [flag for flag, _ in response.messages()] == [0]
        assert _decompress(response) == [BODY]


@pytest.mark.grpcaio_wrong("context.set_compression() in a unary async handler is ignored")
def test_set_compression_in_a_unary_handler(served: Any, aio: Any) -> None:
    with served(_compression_handlers(aio)) as s:
        response = _streamed(s.port, "SetGzip")
        assert response.header("grpc-status") == "0"
        assert response.header("grpc-encoding") == "gzip"
        assert [flag for flag, _ in response.messages()] == [1]
        assert _decompress(response) == [BODY]


def test_set_compression_and_disable_next_message_in_a_stream(served: Any, aio: Any) -> None:
    with served(_compression_handlers(aio)) as s:
        response = _streamed(s.port, "Stream")
        assert response.header("grpc-status") == "0"
        assert response.header("grpc-encoding") == "gzip"
        assert [flag for flag, _ in response.messages()] == [1, 0, 1]
        assert _decompress(response) == [BODY, BODY, BODY]
        with s.open_channel() as ch:
            assert list(ch.unary_stream(method("Stream"))(b"", timeout=TIMEOUT)) == [BODY] * 3


@pytest.mark.parametrize("algorithm", [grpc.Compression.Gzip, grpc.Compression.Deflate], ids=["gzip", "deflate"])
def test_compressed_requests_from_grpcio(served: Any, aio: Any, algorithm: grpc.Compression) -> None:
    with served(_compression_handlers(aio)) as s, s.open_channel(compression=algorithm) as ch:
        assert ch.unary_unary(method("Length"))(BODY, timeout=TIMEOUT) == b"5200:" + BODY[:12]
        requests = iter([BODY, b"", BODY[:7]])
        assert ch.stream_unary(method("Lengths"))(requests, timeout=TIMEOUT) == b"5200,0,7"
