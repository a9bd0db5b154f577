"""The four RPC kinds with async handlers, the read/write style, sync handlers, generated code."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Iterator, List

import grpc
import pytest

from ._support import TIMEOUT, Events, error_of, generic, method


async def _upper(request: bytes, context: Any) -> bytes:
    await asyncio.sleep(0)
    return request.upper()


async def _count_to(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for index in range(int(request)):
        await asyncio.sleep(0)
        yield str(index).encode()


async def _join(request_iterator: AsyncIterator[bytes], context: Any) -> bytes:
    parts = [part async for part in request_iterator]
    return b"|".join(parts)


async def _echo_each(request_iterator: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for part in request_iterator:
        yield part[::-1]


def _async_handlers() -> grpc.GenericRpcHandler:
    return generic(
        {
            "Upper": grpc.unary_unary_rpc_method_handler(_upper),
            "CountTo": grpc.unary_stream_rpc_method_handler(_count_to),
            "Join": grpc.stream_unary_rpc_method_handler(_join),
            "EchoEach": grpc.stream_stream_rpc_method_handler(_echo_each),
        }
    )


def test_unary_unary_async_handler(served: Any) -> None:
    with served(_async_handlers()) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Upper"))(b"hello", timeout=TIMEOUT) == b"HELLO"
        assert ch.unary_unary(method("Upper"))(b"", timeout=TIMEOUT) == b""


def test_unary_stream_async_generator(served: Any) -> None:
    with served(_async_handlers()) as s, s.open_channel() as ch:
        got = list(ch.unary_stream(method("CountTo"))(b"25", timeout=TIMEOUT))
        assert got == [str(i).encode() for i in range(25)]
        assert list(ch.unary_stream(method("CountTo"))(b"0", timeout=TIMEOUT)) == []


def test_stream_unary_async_iterator(served: Any) -> None:
    with served(_async_handlers()) as s, s.open_channel() as ch:
        call = ch.stream_unary(method("Join"))
        assert call(iter([b"a", b"bb", b"ccc"]), timeout=TIMEOUT) == b"a|bb|ccc"
        assert call(iter([]), timeout=TIMEOUT) == b""


def test_stream_stream_async_generator(served: Any) -> None:
    with served(_async_handlers()) as s, s.open_channel() as ch:
        requests = [f"m{i}".encode() for i in range(50)]
        got = list(ch.stream_stream(method("EchoEach"))(iter(requests), timeout=TIMEOUT))
        assert got == [r[::-1] for r in requests]


def test_bidi_ping_pong_interleaves(served: Any) -> None:
    """Each response is sent before the next request exists: the handler does not buffer."""
    import queue

    with served(_async_handlers()) as s, s.open_channel() as ch:
        outbox: queue.Queue[Any] = queue.Queue()

        def requests() -> Iterator[bytes]:
            while True:
                item = outbox.get(timeout=TIMEOUT)
                if item is None:
                    return
                yield item

        outbox.put(b"abc")
        responses = ch.stream_stream(method("EchoEach"))(requests(), timeout=TIMEOUT)
        for word in (b"abc", b"hello", b"xyz"):
            if word != b"abc":
                outbox.put(word)
            assert next(responses) == word[::-1]
        outbox.put(None)
        assert list(responses) == []


def test_unknown_method_is_unimplemented(served: Any) -> None:
    with served(_async_handlers()) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("Nope"))(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        err = error_of(lambda: ch.unary_unary("/other.Service/Upper")(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_handlers_given_to_the_constructor(served: Any) -> None:
    with served(handlers=[_async_handlers()]) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Upper"))(b"ctor", timeout=TIMEOUT) == b"CTOR"


def test_serializers_are_applied(served: Any) -> None:
    async def length(request: str, context: Any) -> int:
        assert isinstance(request, str)
        return len(request)

    handler = grpc.unary_unary_rpc_method_handler(
        length,
        request_deserializer=lambda raw: raw.decode("utf-8"),
        response_serializer=lambda n: str(n).encode(),
    )
    with served(generic({"Length": handler})) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Length"))("héllo".encode(), timeout=TIMEOUT) == b"5"


def test_handler_runs_on_the_servers_loop(served: Any) -> None:
    seen: List[Any] = []

    async def where(request: bytes, context: Any) -> bytes:
        seen.append((asyncio.get_running_loop(), threading.current_thread()))
        return b"ok"

    with served(generic({"Where": grpc.unary_unary_rpc_method_handler(where)})) as s, s.open_channel() as ch:
        ch.unary_unary(method("Where"))(b"", timeout=TIMEOUT)
        assert seen == [(s.loop.loop, s.loop._thread)]


def test_handler_exception_is_unknown(served: Any) -> None:
    async def boom(request: bytes, context: Any) -> bytes:
        raise RuntimeError("boom")

    async def boom_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError("boom")

    handlers = generic(
        {
            "Boom": grpc.unary_unary_rpc_method_handler(boom),
            "BoomStream": grpc.unary_stream_rpc_method_handler(boom_stream),
        }
    )
    with served(handlers) as s, s.open_channel() as ch:
        err = error_of(lambda: ch.unary_unary(method("Boom"))(b"", timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.UNKNOWN
        got: List[bytes] = []

        def drain() -> None:
            for item in ch.unary_stream(method("BoomStream"))(b"", timeout=TIMEOUT):
                got.append(item)

        err = error_of(drain)
        assert err.code() == grpc.StatusCode.UNKNOWN
        assert got == [b"first"]


# --- the read/write style: context.read() / context.write() -------------------------


def _rw_handlers(aio: Any) -> grpc.GenericRpcHandler:
    async def write_n(request: bytes, context: Any) -> None:
        for index in range(int(request)):
            await context.write(f"w{index}".encode())

    async def read_all(request_iterator: Any, context: Any) -> bytes:
        parts = []
        while True:
            part = await context.read()
            if part is aio.EOF:
                break
            parts.append(part)
        return b"+".join(parts)

    async def read_write(request_iterator: Any, context: Any) -> None:
        while True:
            part = await context.read()
            if part is aio.EOF:
                break
            await context.write(part * 2)
        await context.write(b"end")

    return generic(
        {
            "WriteN": grpc.unary_stream_rpc_method_handler(write_n),
            "ReadAll": grpc.stream_unary_rpc_method_handler(read_all),
            "ReadWrite": grpc.stream_stream_rpc_method_handler(read_write),
        }
    )


def test_read_write_style_server_stream(served: Any, aio: Any) -> None:
    with served(_rw_handlers(aio)) as s, s.open_channel() as ch:
        assert list(ch.unary_stream(method("WriteN"))(b"4", timeout=TIMEOUT)) == [b"w0", b"w1", b"w2", b"w3"]


def test_read_write_style_client_stream(served: Any, aio: Any) -> None:
    with served(_rw_handlers(aio)) as s, s.open_channel() as ch:
        assert ch.stream_unary(method("ReadAll"))(iter([b"x", b"y", b"z"]), timeout=TIMEOUT) == b"x+y+z"
        assert ch.stream_unary(method("ReadAll"))(iter([]), timeout=TIMEOUT) == b""


def test_read_write_style_bidi(served: Any, aio: Any) -> None:
    with served(_rw_handlers(aio)) as s, s.open_channel() as ch:
        got = list(ch.stream_stream(method("ReadWrite"))(iter([b"a", b"bc"]), timeout=TIMEOUT))
        assert got == [b"aa", b"bcbc", b"end"]


# --- sync handlers in the asyncio server run in migration_thread_pool ---------------


def test_sync_handlers_run_in_the_migration_thread_pool(served: Any) -> None:
    threads = Events()

    def unary(request: bytes, context: Any) -> bytes:
        threads.add(("unary", threading.current_thread().name))
        return request + b"!"

    def server_stream(request: bytes, context: Any) -> Iterator[bytes]:
        threads.add(("server_stream", threading.current_thread().name))
        for index in range(3):
            yield bytes([65 + index])

    def client_stream(request_iterator: Iterator[bytes], context: Any) -> bytes:
        threads.add(("client_stream", threading.current_thread().name))
        return b"".join(request_iterator)

    def bidi(request_iterator: Iterator[bytes], context: Any) -> Iterator[bytes]:
        threads.add(("bidi", threading.current_thread().name))
        for item in request_iterator:
            yield item.upper()

    handlers = generic(
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        }
    )
    with served(handlers) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Unary"))(b"sync", timeout=TIMEOUT) == b"sync!"
        assert list(ch.unary_stream(method("ServerStream"))(b"", timeout=TIMEOUT)) == [b"A", b"B", b"C"]
        assert ch.stream_unary(method("ClientStream"))(iter([b"p", b"q"]), timeout=TIMEOUT) == b"pq"
        assert list(ch.stream_stream(method("Bidi"))(iter([b"u", b"v"]), timeout=TIMEOUT)) == [b"U", b"V"]
    names = dict(threads.items)
    assert set(names) == {"unary", "server_stream", "client_stream", "bidi"}
    for kind, name in names.items():
        assert name.startswith("migration"), (kind, name)


def test_sync_handler_does_not_block_the_loop(served: Any) -> None:
    """A sync handler blocked in the pool leaves async handlers free to run."""
    release = threading.Event()

    def blocking(request: bytes, context: Any) -> bytes:
        release.wait(TIMEOUT)
        return b"released"

    handlers = generic(
        {
            "Blocking": grpc.unary_unary_rpc_method_handler(blocking),
            "Upper": grpc.unary_unary_rpc_method_handler(_upper),
        }
    )
    with served(handlers) as s, s.open_channel() as ch:
        blocked = ch.unary_unary(method("Blocking")).future(b"", timeout=TIMEOUT)
        try:
            assert ch.unary_unary(method("Upper"))(b"free", timeout=TIMEOUT) == b"FREE"
            assert not blocked.done()
        finally:
            release.set()
        assert blocked.result(TIMEOUT) == b"released"


# --- grpcio-tools' generated code with an async servicer ---------------------------


class AsyncEcho:
    """An async servicer for tests/protos/echo_test.proto."""

    def __init__(self, pb: Any) -> None:
        self.pb = pb

    async def Unary(self, request: Any, context: Any) -> Any:
        if request.status:
            await context.abort(grpc.StatusCode(_status(request.status)), request.details)
        await asyncio.sleep(request.sleep)
        return self.pb.EchoResponse(message=request.message, payload=request.payload)

    async def ServerStream(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for index in range(request.count):
            yield self.pb.EchoResponse(message=request.message, index=index)

    async def ClientStream(self, request_iterator: Any, context: Any) -> Any:
        count = 0
        last = ""
        async for request in request_iterator:
            count += 1
            last = request.message
        return self.pb.EchoResponse(message=last, index=count)

    async def BidiStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        index = 0
        async for request in request_iterator:
            yield self.pb.EchoResponse(message=request.message, index=index)
            index += 1


def _status(number: int) -> Any:
    return next(code.value for code in grpc.StatusCode if code.value[0] == number)


def test_generated_servicer_with_async_methods(served: Any, pb: Any, pb_grpc: Any) -> None:
    servicer_type = type("Servicer", (AsyncEcho, pb_grpc.EchoServiceServicer), {})
    setup = lambda server: pb_grpc.add_EchoServiceServicer_to_server(servicer_type(pb), server)  # noqa: E731
    with served(setup=setup) as s, s.open_channel() as ch:
        stub = pb_grpc.EchoServiceStub(ch)
        reply = stub.Unary(pb.EchoRequest(message="hi", payload=b"\x00\x01"), timeout=TIMEOUT)
        assert (reply.message, reply.payload) == ("hi", b"\x00\x01")
        streamed = list(stub.ServerStream(pb.EchoRequest(message="s", count=3), timeout=TIMEOUT))
        assert [(r.message, r.index) for r in streamed] == [("s", 0), ("s", 1), ("s", 2)]
        summary = stub.ClientStream(iter([pb.EchoRequest(message=m) for m in "abc"]), timeout=TIMEOUT)
        assert (summary.message, summary.index) == ("c", 3)
        bidi = list(stub.BidiStream(iter([pb.EchoRequest(message=m) for m in "xy"]), timeout=TIMEOUT))
        assert [(r.message, r.index) for r in bidi] == [("x", 0), ("y", 1)]
        err = error_of(lambda: stub.Unary(pb.EchoRequest(status=5, details="gone"), timeout=TIMEOUT))
        assert (err.code(), err.details()) == (grpc.StatusCode.NOT_FOUND, "gone")


def test_generated_base_servicer_is_unimplemented(served: Any, pb: Any, pb_grpc: Any) -> None:
    """Methods the servicer does not override answer UNIMPLEMENTED (the base class's sync methods)."""
    setup = lambda server: pb_grpc.add_EchoServiceServicer_to_server(pb_grpc.EchoServiceServicer(), server)  # noqa: E731
    with served(setup=setup) as s, s.open_channel() as ch:
        err = error_of(lambda: pb_grpc.EchoServiceStub(ch).Unary(pb.EchoRequest(), timeout=TIMEOUT))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED


def test_registered_method_handlers_win_over_generic(served: Any, flavour: str) -> None:
    version = tuple(int(part) for part in grpc.__version__.split(".")[:2])
    if flavour == "grpcaio" and version < (1, 85):
        pytest.skip(f"grpc.aio {grpc.__version__} lets the generic handler win (1.85 does not)")

    async def registered(request: bytes, context: Any) -> bytes:
        return b"registered"

    async def fallback(request: bytes, context: Any) -> bytes:
        return b"generic"

    def setup(server: Any) -> None:
        server.add_generic_rpc_handlers((generic({"Which": grpc.unary_unary_rpc_method_handler(fallback)}),))
        server.add_registered_method_handlers(SERVICE_NAME, {"Which": grpc.unary_unary_rpc_method_handler(registered)})

    with served(setup=setup) as s, s.open_channel() as ch:
        call = ch.unary_unary(method("Which"), _registered_method=True)
        assert call(b"", timeout=TIMEOUT) == b"registered"


SERVICE_NAME = "aio.Test"


@pytest.mark.parametrize("kind", ["unary_unary", "unary_stream"])
def test_many_sequential_calls_on_one_channel(served: Any, kind: str) -> None:
    with served(_async_handlers()) as s, s.open_channel() as ch:
        for index in range(100):
            if kind == "unary_unary":
                assert ch.unary_unary(method("Upper"))(b"x%d" % index, timeout=TIMEOUT) == b"X%d" % index
            else:
                assert len(list(ch.unary_stream(method("CountTo"))(b"2", timeout=TIMEOUT))) == 2


def test_read_write_handler_written_against_grpc_aio_names(served: Any) -> None:
    """Code written for grpc.aio (``is grpc.aio.EOF``) runs unchanged on either server."""

    async def count(request_iterator: Any, context: Any) -> bytes:
        total = 0
        while (await context.read()) is not grpc.aio.EOF:
            total += 1
        return str(total).encode()

    with served(generic({"Count": grpc.stream_unary_rpc_method_handler(count)})) as s, s.open_channel() as ch:
        assert ch.stream_unary(method("Count"))(iter([b"a"] * 7), timeout=TIMEOUT) == b"7"


def test_large_messages_both_ways(served: Any) -> None:
    async def mirror(request: bytes, context: Any) -> bytes:
        return request[::-1]

    async def chunks(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for index in range(4):
            yield bytes([index]) * (1024 * 1024)

    handlers = generic(
        {
            "Mirror": grpc.unary_unary_rpc_method_handler(mirror),
            "Chunks": grpc.unary_stream_rpc_method_handler(chunks),
        }
    )
    payload = bytes(range(256)) * (3 * 4096)  # 3 MiB
    with served(handlers) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Mirror"))(payload, timeout=TIMEOUT) == payload[::-1]
        got = list(ch.unary_stream(method("Chunks"))(b"", timeout=TIMEOUT))
        assert [(len(c), c[0]) for c in got] == [(1024 * 1024, i) for i in range(4)]


def test_sync_handler_without_a_migration_thread_pool(served: Any) -> None:
    """With ``migration_thread_pool=None`` a sync handler still runs, off the loop's thread
    (grpc.aio uses the loop's default executor)."""
    seen: List[Any] = []

    def handler(request: bytes, context: Any) -> bytes:
        seen.append(threading.current_thread())
        return b"pooled"

    handlers = generic({"H": grpc.unary_unary_rpc_method_handler(handler)})
    with served(handlers, migration_thread_pool=None) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("H"))(b"", timeout=TIMEOUT) == b"pooled"
        assert seen and seen[0] is not s.loop._thread


def test_a_handler_runs_as_a_task_and_from_3_12_starts_while_its_request_is_read() -> None:
    """From Python 3.12 puregrpc.aio starts a handler's task eagerly: its first step runs
    in the connection's data_received, so a unary handler that awaits nothing answers with
    no loop turn between request and response. Before 3.12 the task starts on a later
    turn. Either way the handler is the current task."""
    import sys

    from ._support import serve

    seen: List[Any] = []

    async def where(request: bytes, context: Any) -> bytes:
        frame = sys._getframe(1)
        names = set()
        while frame is not None:
            names.add(frame.f_code.co_name)
            frame = frame.f_back  # type: ignore[assignment]
        seen.append(("data_received" in names, asyncio.current_task() is not None))
        return b"ok"

    with serve("puregrpc", generic({"Where": grpc.unary_unary_rpc_method_handler(where)})) as s, s.open_channel() as ch:
        assert ch.unary_unary(method("Where"))(b"", timeout=TIMEOUT) == b"ok"
    assert seen == [(sys.version_info >= (3, 12), True)]
