"""Many concurrent streams on one channel; async handlers interleave on the one loop."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, List

import grpc

from ._support import TIMEOUT, LoopEvent, generic, method

STREAMS = 200


def test_200_concurrent_bidi_streams_on_one_channel(served: Any) -> None:
    """Every stream is open at once: no handler answers until all 200 have arrived."""
    state = {"open": 0, "peak": 0}
    all_open = LoopEvent()

    async def chat(request_iterator: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        try:
            if state["open"] >= STREAMS:
                all_open.set()
            await asyncio.wait_for(all_open.wait(), TIMEOUT)
            async for item in request_iterator:
                yield item + b"<"
        finally:
            state["open"] -= 1

    handlers = generic({"Chat": grpc.stream_stream_rpc_method_handler(chat)})
    with served(handlers) as s:

        async def client() -> List[List[bytes]]:
            async with grpc.aio.insecure_channel(s.target) as ch:
                method_call = ch.stream_stream(method("Chat"))

                async def one(index: int) -> List[bytes]:
                    call = method_call(timeout=TIMEOUT * 2)
                    got = []
                    for n in range(3):
                        await call.write(b"%d.%d" % (index, n))
                        got.append(await call.read())
                    await call.done_writing()
                    assert await call.read() == grpc.aio.EOF
                    assert await call.code() == grpc.StatusCode.OK
                    return got

                return await asyncio.gather(*(one(i) for i in range(STREAMS)))

        results = s.run(client(), timeout=TIMEOUT * 3)
    assert state["peak"] == STREAMS
    assert results == [[b"%d.%d<" % (i, n) for n in range(3)] for i in range(STREAMS)]


def test_200_concurrent_unary_calls_from_grpcio_sync_client(served: Any) -> None:
    """No call is answered until all 200 handlers are running at once."""
    state = {"active": 0, "peak": 0}
    all_running = LoopEvent()

    async def held(request: bytes, context: Any) -> bytes:
        state["active"] += 1
        state["peak"] = max(state["peak"], state["active"])
        if state["active"] >= STREAMS:
            all_running.set()
        await asyncio.wait_for(all_running.wait(), TIMEOUT)
        state["active"] -= 1
        return request

    handlers = generic({"Held": grpc.unary_unary_rpc_method_handler(held)})
    with served(handlers) as s, s.open_channel() as ch:
        call = ch.unary_unary(method("Held"))
        futures = [call.future(b"%d" % i, timeout=TIMEOUT * 2) for i in range(STREAMS)]
        assert [f.result(TIMEOUT * 2) for f in futures] == [b"%d" % i for i in range(STREAMS)]
    assert state["peak"] == STREAMS


def test_a_stream_to_a_slow_reader_stalls_the_handler_then_arrives_intact(served: Any) -> None:
    """A server-streaming handler writes faster than its client reads: its writes must
    wait (the client's window, then the response queue), not pile up, and resume as the
    client reads on; every message arrives, in order."""
    count, size = 200, 64 * 1024
    produced = [0]

    async def produce(request: bytes, context: Any) -> Any:
        for index in range(count):
            produced[0] += 1
            yield index.to_bytes(4, "big") + bytes([index % 251]) * (size - 4)

    handlers = generic({"Produce": grpc.unary_stream_rpc_method_handler(produce)})
    # Without BDP probing grpcio's client keeps its receive window small, so a stalled
    # reader soon stalls the server (with it, the window may grow to 8 MiB or more).
    with served(handlers) as s, s.channel(options=[("grpc.http2.bdp_probe", 0)]) as channel:
        call = channel.unary_stream(method("Produce"))(b"", timeout=3 * TIMEOUT)
        received: List[bytes] = []
        for message in call:
            received.append(message)
            if len(received) == 5:
                time.sleep(0.5)  # the reader stalls: the handler must stall too
                stalled_at = produced[0]
                time.sleep(0.3)
                assert produced[0] == stalled_at, "the handler kept producing"
                # the client's 64 KiB window and buffers, and the bounded response queue
                assert stalled_at <= 30, stalled_at
            elif len(received) % 20 == 0:
                time.sleep(0.02)
        assert call.code() is grpc.StatusCode.OK
    assert len(received) == count
    for index, message in enumerate(received):
        assert int.from_bytes(message[:4], "big") == index
        assert message[4:] == bytes([index % 251]) * (size - 4)
