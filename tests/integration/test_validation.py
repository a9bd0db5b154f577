"""Requests that are not acceptable gRPC, sent by the h2 library over a real socket."""

from __future__ import annotations

from typing import Any, Iterator, List, Tuple

import grpc
import pytest

from ._support import (
    GRPC_REQUEST,
    RawClient,
    RawResponse,
    Running,
    grpc_frame,
    grpc_messages,
    grpc_request,
    serve,
)

ECHO = "/puregrpc.test.EchoService/Unary"


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    def echo(request: bytes, context: Any) -> bytes:
        return request

    generic = grpc.method_handlers_generic_handler(
        "puregrpc.test.EchoService", {"Unary": grpc.unary_unary_rpc_method_handler(echo)}
    )
    with serve(handlers=[generic]) as running:
        yield running


def replace(headers: List[Tuple[str, str]], name: str, value: Any) -> List[Tuple[str, str]]:
    """``headers`` with ``name`` set to ``value`` (or removed when None)."""
    out = [(k, value if k == name else v) for k, v in headers if k != name or value is not None]
    if value is not None and name not in dict(headers):
        out.append((name, value))
    return out


def send(server: Running, headers: List[Tuple[str, str]], body: bytes = b"") -> RawResponse:
    with RawClient(server.port) as client:
        response = client.request(headers, body)
        # The connection stays usable after a rejected request.
        ok = client.request(GRPC_REQUEST, grpc_frame(b"still alive"))
        assert ok.all_headers["grpc-status"] == "0"
        assert grpc_messages(ok.data) == [(False, b"still alive")]
    return response


def assert_trailers_only(response: RawResponse, http_status: int, code: grpc.StatusCode) -> None:
    assert response.ended and response.reset is None
    assert response.trailers == [], "expected a Trailers-Only response"
    assert response.data == b""
    headers = dict(response.headers)
    assert headers[":status"] == str(http_status)
    assert headers["grpc-status"] == str(code.value[0])
    assert headers.get("grpc-message")
    assert headers["content-type"].startswith("application/grpc")


def test_valid_request(server: Running) -> None:
    response = send(server, list(GRPC_REQUEST), grpc_frame(b"hi"))
    assert dict(response.headers)[":status"] == "200"
    assert dict(response.trailers)["grpc-status"] == "0"
    assert grpc_messages(response.data) == [(False, b"hi")]


@pytest.mark.parametrize("method", ["GET", "PUT", "HEAD"])
def test_non_post_is_405(server: Running, method: str) -> None:
    headers = replace(GRPC_REQUEST, ":method", method)
    assert_trailers_only(send(server, headers), 405, grpc.StatusCode.INTERNAL)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json", "grpc"])
def test_bad_content_type_is_415(server: Running, content_type: Any) -> None:
    headers = replace(GRPC_REQUEST, "content-type", content_type)
    assert_trailers_only(send(server, headers, grpc_frame(b"x")), 415, grpc.StatusCode.INTERNAL)


@pytest.mark.parametrize("content_type", ["application/grpc+proto", "application/grpc+json"])
def test_grpc_content_subtypes_are_accepted(server: Running, content_type: str) -> None:
    headers = replace(GRPC_REQUEST, "content-type", content_type)
    response = send(server, headers, grpc_frame(b"sub"))
    assert response.all_headers["grpc-status"] == "0"


def test_missing_te(server: Running) -> None:
    headers = replace(GRPC_REQUEST, "te", None)
    assert_trailers_only(send(server, headers, grpc_frame(b"x")), 400, grpc.StatusCode.INTERNAL)


def test_te_other_than_trailers_is_malformed(server: Running) -> None:
    # RFC 9113 8.2.2: TE may only be "trailers"; anything else is a malformed
    # request, a stream error of type PROTOCOL_ERROR.
    headers = replace(GRPC_REQUEST, "te", "gzip")
    response = send(server, headers, grpc_frame(b"x"))
    assert response.reset == 0x1


@pytest.mark.parametrize("path", ["/", "/nopath", "/a/b/c", "/svc/", "no-slash/x", "//Method"])
def test_bad_path_is_unimplemented(server: Running, path: str) -> None:
    headers = replace(GRPC_REQUEST, ":path", path)
    assert_trailers_only(send(server, headers, grpc_frame(b"x")), 200, grpc.StatusCode.UNIMPLEMENTED)


def test_unknown_method_is_trailers_only_unimplemented(server: Running) -> None:
    headers = grpc_request("/puregrpc.test.EchoService/Nope")
    assert_trailers_only(send(server, headers, grpc_frame(b"x")), 200, grpc.StatusCode.UNIMPLEMENTED)


@pytest.mark.parametrize("timeout", ["abc", "1", "123456789S", "10x", "-1S"])
def test_malformed_grpc_timeout(server: Running, timeout: str) -> None:
    headers = grpc_request(ECHO, ("grpc-timeout", timeout))
    response = send(server, headers, grpc_frame(b"x"))
    assert response.trailers == []
    assert dict(response.headers)["grpc-status"] != "0"


def test_bad_binary_header(server: Running) -> None:
    headers = grpc_request(ECHO, ("data-bin", "!!not base64!!"))
    response = send(server, headers, grpc_frame(b"x"))
    assert dict(response.headers)["grpc-status"] != "0"


def test_unary_without_a_message(server: Running) -> None:
    response = send(server, grpc_request(ECHO))
    headers = response.all_headers
    # As grpcio: UNIMPLEMENTED, '"<method>" requires exactly one request message.'
    assert headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    assert headers["grpc-message"] == f'"{ECHO}" requires exactly one request message.'


def test_truncated_message(server: Running) -> None:
    response = send(server, grpc_request(ECHO), grpc_frame(b"whole message")[:-3])
    assert response.all_headers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])


def test_invalid_compressed_flag(server: Running) -> None:
    body = b"\x02" + grpc_frame(b"abc")[1:]
    response = send(server, grpc_request(ECHO), body)
    assert response.all_headers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])


def test_binary_metadata_padded_and_unpadded(server: Running) -> None:
    for value in ("AAEC", "AAE", "AAE="):
        response = send(server, grpc_request(ECHO, ("data-bin", value)), grpc_frame(b"b"))
        assert response.all_headers["grpc-status"] == "0"
