"""Many concurrent streams on one channel; async handlers interleave on the one loop."""

from __future__ import annotations

import asyncio
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
