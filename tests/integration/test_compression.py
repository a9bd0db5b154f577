"""Message compression: requests from grpcio, responses checked on the wire."""

from __future__ import annotations

import zlib
from typing import Any, Dict, Iterator, List, Optional

import grpc
import pytest

import puregrpc

from ._support import (
    TIMEOUT,
    RawClient,
    Running,
    grpc_frame,
    grpc_messages,
    grpc_request,
    serve,
)

SERVICE = "zip.Probe"
BODY = b"compressible " * 200


class Probe:
    def __init__(self) -> None:
        self.request_flags: List[Optional[bool]] = []

    def _note(self, context: Any) -> None:
        self.request_flags.append(context.request_compressed())

    def echo(self, request: bytes, context: Any) -> bytes:
        self._note(context)
        return request

    def set_compression(self, request: bytes, context: Any) -> bytes:
        context.set_compression(puregrpc.Compression[request.decode()])
        return BODY

    def set_compression_grpc(self, request: bytes, context: Any) -> bytes:
        context.set_compression(grpc.Compression.Deflate)
        return BODY

    def stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        context.set_compression(grpc.Compression.Gzip)
        yield BODY
        context.disable_next_message_compression()
        yield BODY
        yield BODY

    def count(self, requests: Iterator[bytes], context: Any) -> bytes:
        total = 0
        for request in requests:
            self._note(context)
            total += len(request)
        return str(total).encode()

    def handlers(self) -> Dict[str, Any]:
        uu = grpc.unary_unary_rpc_method_handler
        return {
            "Echo": uu(self.echo),
            "SetCompression": uu(self.set_compression),
            "SetCompressionGrpc": uu(self.set_compression_grpc),
            "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            "Count": grpc.stream_unary_rpc_method_handler(self.count),
        }


@pytest.fixture(scope="module")
def probe() -> Probe:
    return Probe()


@pytest.fixture(scope="module")
def plain(probe: Probe) -> Iterator[Running]:
    with serve(handlers=[grpc.method_handlers_generic_handler(SERVICE, probe.handlers())]) as r:
        yield r


@pytest.fixture(scope="module")
def gzip_server(probe: Probe) -> Iterator[Running]:
    generic = grpc.method_handlers_generic_handler(SERVICE, probe.handlers())
    with serve(handlers=[generic], compression=puregrpc.Compression.Gzip) as r:
        yield r


def inflate(data: bytes, encoding: str) -> bytes:
    return zlib.decompress(data, 31 if encoding == "gzip" else 15)


def raw_call(running: Running, method: str, body: bytes, *extra: Any) -> Any:
    with RawClient(running.port) as client:
        return client.request(grpc_request(f"/{SERVICE}/{method}", *extra), grpc_frame(body))


ACCEPT_ALL = ("grpc-accept-encoding", "identity,deflate,gzip")


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_compressed_requests_from_grpcio(plain: Running, probe: Probe, compression: Any) -> None:
    with plain.channel(compression=compression) as ch:
        probe.request_flags.clear()
        assert ch.unary_unary(f"/{SERVICE}/Echo")(BODY, timeout=TIMEOUT) == BODY
        requests = [BODY, b"", b"x" * 100_000]
        count = ch.stream_unary(f"/{SERVICE}/Count")(iter(requests), timeout=TIMEOUT)
        assert count == str(len(BODY) + 100_000).encode()
        assert probe.request_flags[0] is True
        assert True in probe.request_flags[1:]
    # Per call, on an uncompressed channel.
    with plain.channel() as ch:
        probe.request_flags.clear()
        echo = ch.unary_unary(f"/{SERVICE}/Echo")
        assert echo(BODY, timeout=TIMEOUT, compression=compression) == BODY
        assert echo(BODY, timeout=TIMEOUT) == BODY
        assert probe.request_flags == [True, False]


def test_server_default_compression(gzip_server: Running) -> None:
    # grpcio decodes it...
    with gzip_server.channel() as ch:
        assert ch.unary_unary(f"/{SERVICE}/Echo")(BODY, timeout=TIMEOUT) == BODY
        count = ch.stream_unary(f"/{SERVICE}/Count")(iter([BODY] * 3), timeout=TIMEOUT)
        assert count == str(3 * len(BODY)).encode()
    # ...and on the wire the response is gzip.
    response = raw_call(gzip_server, "Echo", BODY, ACCEPT_ALL)
    headers = dict(response.headers)
    assert headers["grpc-encoding"] == "gzip"
    [(compressed, payload)] = grpc_messages(response.data)
    assert compressed and inflate(payload, "gzip") == BODY
    assert dict(response.trailers)["grpc-status"] == "0"


def test_no_compression_when_client_does_not_accept_it(gzip_server: Running) -> None:
    response = raw_call(gzip_server, "Echo", BODY)  # no grpc-accept-encoding
    assert "grpc-encoding" not in dict(response.headers)
    assert grpc_messages(response.data) == [(False, BODY)]
    response = raw_call(gzip_server, "Echo", BODY, ("grpc-accept-encoding", "identity,deflate"))
    assert "grpc-encoding" not in dict(response.headers)
    assert grpc_messages(response.data) == [(False, BODY)]


@pytest.mark.parametrize("name", ["Gzip", "Deflate", "NoCompression"])
def test_per_call_set_compression(plain: Running, gzip_server: Running, name: str) -> None:
    encoding = {"Gzip": "gzip", "Deflate": "deflate", "NoCompression": None}[name]
    for running in (plain, gzip_server):
        response = raw_call(running, "SetCompression", name.encode(), ACCEPT_ALL)
        assert dict(response.headers).get("grpc-encoding") == encoding
        [(compressed, payload)] = grpc_messages(response.data)
        assert compressed is (encoding is not None)
        assert (inflate(payload, encoding) if encoding else payload) == BODY
        with running.channel() as ch:
            reply = ch.unary_unary(f"/{SERVICE}/SetCompression")(name.encode(), timeout=TIMEOUT)
            assert reply == BODY


def test_set_compression_with_grpc_enum(plain: Running) -> None:
    response = raw_call(plain, "SetCompressionGrpc", b"", ACCEPT_ALL)
    assert dict(response.headers)["grpc-encoding"] == "deflate"
    [(compressed, payload)] = grpc_messages(response.data)
    assert compressed and inflate(payload, "deflate") == BODY


def test_disable_next_message_compression(plain: Running) -> None:
    response = raw_call(plain, "Stream", b"", ACCEPT_ALL)
    assert dict(response.headers)["grpc-encoding"] == "gzip"
    messages = grpc_messages(response.data)
    assert [flag for flag, _ in messages] == [True, False, True]
    assert [inflate(p, "gzip") if flag else p for flag, p in messages] == [BODY] * 3
    with plain.channel() as ch:
        assert list(ch.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=TIMEOUT)) == [BODY] * 3


def test_unknown_request_encoding_is_unimplemented(plain: Running) -> None:
    body = grpc_frame(b"whatever", compressed=True)
    with RawClient(plain.port) as client:
        response = client.request(grpc_request(f"/{SERVICE}/Echo", ("grpc-encoding", "snappy")), body)
    headers = dict(response.headers)
    assert response.trailers == []  # Trailers-Only
    assert headers[":status"] == "200"
    assert headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    assert "snappy" in headers["grpc-message"]
    # The spec: the server names the encodings it does accept.
    accepted = {e.strip() for e in headers["grpc-accept-encoding"].split(",")}
    assert {"gzip", "deflate", "identity"} <= accepted


def test_compressed_flag_without_encoding_is_internal(plain: Running) -> None:
    body = grpc_frame(zlib.compress(b"abc"), compressed=True)
    with RawClient(plain.port) as client:
        response = client.request(grpc_request(f"/{SERVICE}/Echo"), body)
    status = response.all_headers
    assert status["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])


def test_corrupt_compressed_message_is_internal(plain: Running) -> None:
    body = grpc_frame(b"not gzip at all", compressed=True)
    with RawClient(plain.port) as client:
        response = client.request(grpc_request(f"/{SERVICE}/Echo", ("grpc-encoding", "gzip")), body)
    assert response.all_headers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])
    # identity-encoded request with the flag clear is fine under any grpc-encoding
    body = grpc_frame(b"plain")
    with RawClient(plain.port) as client:
        response = client.request(grpc_request(f"/{SERVICE}/Echo", ("grpc-encoding", "gzip")), body)
    assert response.all_headers["grpc-status"] == "0"
    assert grpc_messages(response.data) == [(False, b"plain")]
