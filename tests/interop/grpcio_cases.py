"""The interop client cases of grpc/grpc doc/interop-test-descriptions.md, on grpcio's client.

Each case asserts what the document says. Where grpcio's Python API cannot do
what the case asks (per-message compression flags), the note says so and the
raw HTTP/2 test in test_wire.py covers the wire-level assertion.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List

import grpc

SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
ZEROS_271828 = b"\0" * 271828


class Stubs:
    """Multi-callables for every TestService method on one channel."""

    def __init__(self, channel: grpc.Channel, pb: Any) -> None:
        self.pb = pb

        def method(kind: str, name: str, request: Any, response: Any, service: str = "TestService") -> Any:
            make = getattr(channel, kind)
            return make(
                f"/grpc.testing.{service}/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )

        self.empty_call = method("unary_unary", "EmptyCall", pb.Empty, pb.Empty)
        self.unary_call = method("unary_unary", "UnaryCall", pb.SimpleRequest, pb.SimpleResponse)
        self.cacheable_unary_call = method("unary_unary", "CacheableUnaryCall", pb.SimpleRequest, pb.SimpleResponse)
        self.streaming_output_call = method(
            "unary_stream",
            "StreamingOutputCall",
            pb.StreamingOutputCallRequest,
            pb.StreamingOutputCallResponse,
        )
        self.streaming_input_call = method(
            "stream_unary",
            "StreamingInputCall",
            pb.StreamingInputCallRequest,
            pb.StreamingInputCallResponse,
        )
        self.full_duplex_call = method(
            "stream_stream",
            "FullDuplexCall",
            pb.StreamingOutputCallRequest,
            pb.StreamingOutputCallResponse,
        )
        self.half_duplex_call = method(
            "stream_stream",
            "HalfDuplexCall",
            pb.StreamingOutputCallRequest,
            pb.StreamingOutputCallResponse,
        )
        self.unimplemented_call = method("unary_unary", "UnimplementedCall", pb.Empty, pb.Empty)
        self.unimplemented_service = method(
            "unary_unary", "UnimplementedCall", pb.Empty, pb.Empty, service="UnimplementedService"
        )


def _large_request(pb: Any, **fields: Any) -> Any:
    return pb.SimpleRequest(response_size=314159, payload=pb.Payload(body=ZEROS_271828), **fields)


def _assert_large_response(response: Any) -> None:
    assert len(response.payload.body) == 314159
    assert response.payload.body == b"\0" * 314159


def _expect_code(code: grpc.StatusCode, fn: Callable[[], Any]) -> grpc.RpcError:
    try:
        fn()
    except grpc.RpcError as exc:
        assert exc.code() is code, (exc.code(), exc.details())
        return exc
    raise AssertionError(f"expected {code}, the call succeeded")


class _Queue:
    """A request iterator fed one message at a time (for ping-pong)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: List[Any] = []
        self._closed = False

    def put(self, item: Any) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __iter__(self) -> _Queue:
        return self

    def __next__(self) -> Any:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._items:
                return self._items.pop(0)
            raise StopIteration


# -- the cases ------------------------------------------------------------------
def empty_unary(s: Stubs) -> None:
    response = s.empty_call(s.pb.Empty())
    assert response == s.pb.Empty()
    assert response.ByteSize() == 0


def large_unary(s: Stubs) -> None:
    _assert_large_response(s.unary_call(_large_request(s.pb)))


def client_compressed_unary(s: Stubs) -> None:
    pb = s.pb
    probe = _large_request(pb, expect_compressed=pb.BoolValue(value=True))
    _expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: s.unary_call(probe))
    compressed = _large_request(pb, expect_compressed=pb.BoolValue(value=True))
    _assert_large_response(s.unary_call(compressed, compression=grpc.Compression.Gzip))
    plain = _large_request(pb, expect_compressed=pb.BoolValue(value=False))
    _assert_large_response(s.unary_call(plain))


def server_compressed_unary(s: Stubs) -> None:
    # grpcio's Python API does not show the response's compressed flag; the flag
    # itself is checked on the wire in test_wire.py.
    pb = s.pb
    for flag in (True, False):
        response = s.unary_call(_large_request(pb, response_compressed=pb.BoolValue(value=flag)))
        _assert_large_response(response)


def client_streaming(s: Stubs) -> None:
    pb = s.pb
    sizes = (27182, 8, 1828, 45904)
    requests = (pb.StreamingInputCallRequest(payload=pb.Payload(body=b"\0" * n)) for n in sizes)
    assert s.streaming_input_call(requests).aggregated_payload_size == 74922


def client_compressed_streaming(s: Stubs) -> None:
    pb = s.pb
    probe = pb.StreamingInputCallRequest(
        expect_compressed=pb.BoolValue(value=True), payload=pb.Payload(body=b"\0" * 27182)
    )
    _expect_code(grpc.StatusCode.INVALID_ARGUMENT, lambda: s.streaming_input_call(iter([probe])))
    # grpcio compresses every message of a call or none: here both messages are
    # compressed (the second's expect_compressed=false lets either pass). The
    # Node client sends the second one uncompressed, as the document asks.
    requests = [
        pb.StreamingInputCallRequest(
            expect_compressed=pb.BoolValue(value=True), payload=pb.Payload(body=b"\0" * 27182)
        ),
        pb.StreamingInputCallRequest(
            expect_compressed=pb.BoolValue(value=False), payload=pb.Payload(body=b"\0" * 45904)
        ),
    ]
    response = s.streaming_input_call(iter(requests), compression=grpc.Compression.Gzip)
    assert response.aggregated_payload_size == 73086


def server_streaming(s: Stubs) -> None:
    pb = s.pb
    sizes = (31415, 9, 2653, 58979)
    request = pb.StreamingOutputCallRequest(response_parameters=[pb.ResponseParameters(size=n) for n in sizes])
    responses = list(s.streaming_output_call(request))
    assert [len(r.payload.body) for r in responses] == list(sizes)
    assert all(r.payload.body == b"\0" * len(r.payload.body) for r in responses)


def server_compressed_streaming(s: Stubs) -> None:
    pb = s.pb
    request = pb.StreamingOutputCallRequest(
        response_parameters=[
            pb.ResponseParameters(size=31415, compressed=pb.BoolValue(value=True)),
            pb.ResponseParameters(size=92653, compressed=pb.BoolValue(value=False)),
        ]
    )
    responses = list(s.streaming_output_call(request))
    assert [len(r.payload.body) for r in responses] == [31415, 92653]


def ping_pong(s: Stubs) -> None:
    pb = s.pb
    pairs = ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904))
    requests = _Queue()
    responses = s.full_duplex_call(requests)
    sizes = []
    for response_size, payload_size in pairs:
        requests.put(
            pb.StreamingOutputCallRequest(
                response_parameters=[pb.ResponseParameters(size=response_size)],
                payload=pb.Payload(body=b"\0" * payload_size),
            )
        )
        sizes.append(len(next(responses).payload.body))
    requests.close()
    assert list(responses) == []
    assert sizes == [pair[0] for pair in pairs]
    assert responses.code() is grpc.StatusCode.OK


def empty_stream(s: Stubs) -> None:
    responses = s.full_duplex_call(iter([]))
    assert list(responses) == []
    assert responses.code() is grpc.StatusCode.OK


def timeout_on_sleeping_server(s: Stubs) -> None:
    pb = s.pb
    requests = _Queue()
    requests.put(pb.StreamingOutputCallRequest(payload=pb.Payload(body=b"\0" * 27182)))
    responses = s.full_duplex_call(requests, timeout=0.001)
    _expect_code(grpc.StatusCode.DEADLINE_EXCEEDED, lambda: list(responses))
    requests.close()


def cancel_after_begin(s: Stubs) -> None:
    requests = _Queue()
    future = s.streaming_input_call.future(requests)
    future.cancel()
    assert future.cancelled()
    assert future.code() is grpc.StatusCode.CANCELLED
    requests.close()


def cancel_after_first_response(s: Stubs) -> None:
    pb = s.pb
    requests = _Queue()
    responses = s.full_duplex_call(requests)
    requests.put(
        pb.StreamingOutputCallRequest(
            response_parameters=[pb.ResponseParameters(size=31415)],
            payload=pb.Payload(body=b"\0" * 27182),
        )
    )
    assert len(next(responses).payload.body) == 31415
    responses.cancel()
    _expect_code(grpc.StatusCode.CANCELLED, lambda: next(responses))
    assert responses.code() is grpc.StatusCode.CANCELLED
    requests.close()


def _status_case(s: Stubs, message: str) -> None:
    pb = s.pb
    status = pb.EchoStatus(code=2, message=message)
    exc = _expect_code(grpc.StatusCode.UNKNOWN, lambda: s.unary_call(pb.SimpleRequest(response_status=status)))
    assert exc.details() == message
    responses = s.full_duplex_call(iter([pb.StreamingOutputCallRequest(response_status=status)]))
    exc = _expect_code(grpc.StatusCode.UNKNOWN, lambda: list(responses))
    assert exc.details() == message


def status_code_and_message(s: Stubs) -> None:
    _status_case(s, "test status message")


def special_status_message(s: Stubs) -> None:
    _status_case(s, SPECIAL_MESSAGE)


def custom_metadata(s: Stubs) -> None:
    pb = s.pb
    metadata = (
        ("x-grpc-test-echo-initial", "test_initial_metadata_value"),
        ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab"),
    )

    def check(initial: Any, trailing: Any) -> None:
        assert ("x-grpc-test-echo-initial", "test_initial_metadata_value") in [tuple(m) for m in initial]
        assert ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab") in [tuple(m) for m in trailing]

    response, call = s.unary_call.with_call(_large_request(pb), metadata=metadata)
    _assert_large_response(response)
    check(call.initial_metadata(), call.trailing_metadata())
    request = pb.StreamingOutputCallRequest(
        response_parameters=[pb.ResponseParameters(size=314159)],
        payload=pb.Payload(body=ZEROS_271828),
    )
    responses = s.full_duplex_call(iter([request]), metadata=metadata)
    assert [len(r.payload.body) for r in responses] == [314159]
    check(responses.initial_metadata(), responses.trailing_metadata())


def unimplemented_method(s: Stubs) -> None:
    _expect_code(grpc.StatusCode.UNIMPLEMENTED, lambda: s.unimplemented_call(s.pb.Empty()))


def unimplemented_service(s: Stubs) -> None:
    _expect_code(grpc.StatusCode.UNIMPLEMENTED, lambda: s.unimplemented_service(s.pb.Empty()))


# Soak: shortened (the official default is 10 iterations, 1 s per-iteration bound).
SOAK_ITERATIONS = 10
SOAK_MAX_LATENCY = 1.0


def rpc_soak(s: Stubs) -> None:
    for _ in range(SOAK_ITERATIONS):
        start = time.monotonic()
        _assert_large_response(s.unary_call(_large_request(s.pb)))
        assert time.monotonic() - start < SOAK_MAX_LATENCY


def channel_soak(s: Stubs, target: str) -> None:
    for _ in range(SOAK_ITERATIONS):
        start = time.monotonic()
        with grpc.insecure_channel(target) as channel:
            _assert_large_response(Stubs(channel, s.pb).unary_call(_large_request(s.pb)))
        assert time.monotonic() - start < SOAK_MAX_LATENCY


CASES: Dict[str, Callable[[Stubs], None]] = {
    name: fn
    for name, fn in list(globals().items())
    if callable(fn)
    and getattr(fn, "__module__", None) == __name__
    and not name.startswith("_")
    and name not in ("Stubs", "channel_soak")
}
