"""``grpc.testing.TestService`` as grpc/grpc doc/interop-test-descriptions.md specifies it."""

from __future__ import annotations

import time
from typing import Any, Iterable, Iterator, List

from .._compression import Compression
from .._status import StatusCode
from ._protos import InteropProtos

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


def _status_code(number: int) -> StatusCode:
    for code in StatusCode:
        if code.value[0] == number:
            return code
    return StatusCode.UNKNOWN


def _was_compressed(context: Any) -> bool:
    probe = getattr(context, "request_compressed", None)
    return bool(probe()) if probe is not None else False


class TestServiceServicer:
    """Every method of ``grpc.testing.TestService``; run it on any server."""

    __test__ = False  # not a pytest class

    def __init__(self, protos: InteropProtos) -> None:
        self.pb = protos

    # -- helpers ---------------------------------------------------------------
    def _payload(self, size: int) -> Any:
        if size < 0:
            raise ValueError(f"negative response size {size}")
        return self.pb.Payload(type=0, body=b"\0" * size)

    @staticmethod
    def _echo_metadata(context: Any) -> None:
        initial = []
        trailing = []
        for key, value in context.invocation_metadata():
            if key == ECHO_INITIAL:
                initial.append((key, value))
            elif key == ECHO_TRAILING:
                trailing.append((key, value))
        if initial:
            context.send_initial_metadata(initial)
        if trailing:
            context.set_trailing_metadata(trailing)

    @staticmethod
    def _check_compressed(request: Any, context: Any) -> None:
        """expect_compressed: the request must have arrived compressed."""
        expected = request.HasField("expect_compressed") and request.expect_compressed.value
        if expected and not _was_compressed(context):
            context.abort(StatusCode.INVALID_ARGUMENT, "Expected compressed request, got uncompressed")

    @staticmethod
    def _apply_status(request: Any, context: Any) -> None:
        if request.HasField("response_status") and request.response_status.code != 0:
            status = request.response_status
            context.abort(_status_code(status.code), status.message)

    def _stream(self, requests: Iterable[Any], context: Any) -> Iterator[Any]:
        """Responses for a sequence of StreamingOutputCallRequests, in order."""
        compression_set = False
        next_send = time.monotonic()
        for request in requests:
            self._apply_status(request, context)
            for params in request.response_parameters:
                if params.interval_us > 0:
                    # interval_us counts from the previous response (it accumulates)
                    next_send += params.interval_us / 1e6
                    delay = next_send - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if not context.is_active():
                        return
                else:
                    next_send = time.monotonic()
                compressed = params.HasField("compressed") and params.compressed.value
                if compressed and not compression_set:
                    context.set_compression(Compression.Gzip)
                    compression_set = True
                if compression_set and not compressed:
                    context.disable_next_message_compression()
                yield self.pb.StreamingOutputCallResponse(payload=self._payload(params.size))

    # -- TestService -----------------------------------------------------------
    def EmptyCall(self, request: Any, context: Any) -> Any:
        self._echo_metadata(context)
        return self.pb.Empty()

    def UnaryCall(self, request: Any, context: Any) -> Any:
        self._echo_metadata(context)
        self._check_compressed(request, context)
        self._apply_status(request, context)
        if request.response_type != 0:  # only COMPRESSABLE exists
            context.abort(StatusCode.INVALID_ARGUMENT, f"unsupported response_type {request.response_type}")
        if request.HasField("response_compressed") and request.response_compressed.value:
            context.set_compression(Compression.Gzip)
        else:
            context.set_compression(Compression.NoCompression)
        return self.pb.SimpleResponse(payload=self._payload(request.response_size))

    def CacheableUnaryCall(self, request: Any, context: Any) -> Any:
        """The request is ignored; the payload is the time in nanoseconds, cacheable 60 s."""
        context.send_initial_metadata([("cache-control", "max-age=60, public")])
        body = str(time.time_ns()).encode("ascii")
        return self.pb.SimpleResponse(payload=self.pb.Payload(type=0, body=body))

    def StreamingOutputCall(self, request: Any, context: Any) -> Iterator[Any]:
        self._echo_metadata(context)
        return self._stream([request], context)

    def StreamingInputCall(self, request_iterator: Iterator[Any], context: Any) -> Any:
        self._echo_metadata(context)
        total = 0
        for request in request_iterator:
            self._check_compressed(request, context)
            total += len(request.payload.body)
        return self.pb.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        self._echo_metadata(context)
        return self._stream(request_iterator, context)

    def HalfDuplexCall(self, request_iterator: Iterator[Any], context: Any) -> Iterator[Any]:
        self._echo_metadata(context)
        requests: List[Any] = list(request_iterator)
        return self._stream(requests, context)

    def UnimplementedCall(self, request: Any, context: Any) -> Any:
        context.abort(StatusCode.UNIMPLEMENTED, "UnimplementedCall is not implemented, as specified")
