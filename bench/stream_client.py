"""Load generator for the streaming cases of run.py: grpcio's asyncio client (grpc.aio).

    python bench/stream_client.py --port P --kind ss|cs|bidi|ul --calls C --count N --size S
                                  --duration D [--warm-up W]
    python bench/stream_client.py --serve      # runs one after another, as JSON lines on stdin;
                                               # {"check": [PORT, ...]}: check.py's checks

Runs C concurrent calls, one after another on each of C tasks, over one channel:

- ss: ServerStream asking for N messages of S bytes; checks every message's seq and payload;
- cs: ClientStream of N messages of S bytes; checks the server's summary (count, bytes, none bad);
- bidi: Bidi, N ping-pongs per call (write one message, read its echo); checks every echo;
- ul: Unary, one message of S bytes each way per call (N is 1); checks every reply's payload.

Every call must end with status OK. After connecting and W seconds of load it prints
``ready``, then waits for a line on stdin (run.py sends ``go`` to all its clients at once),
counts for D seconds, and prints one JSON line: messages and payload bytes moved in those D
seconds (ss: received; cs: written; bidi: echoes received), the calls that finished in them
and their latencies (bidi: each message's round trip), this process's CPU seconds in them,
and the problems seen from the start to the end of the last call. The calls running at the
end of the D seconds are finished (and checked) but not counted; those that take more than
--grace seconds more are cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Dict, List, Optional

import gen
import grpc
import grpc.aio

MAX_PROBLEMS = 5


class Window:
    """The measurement window, and what was counted in it."""

    def __init__(self) -> None:
        self.start = float("inf")
        self.end = float("inf")
        self.stopping = False
        self.messages = 0
        self.bytes = 0
        self.calls = 0
        self.latencies: List[float] = []
        self.problems: List[str] = []
        self.problem_count = 0
        self.calls_ok_total = 0  # warm-up included

    def inside(self, now: float) -> bool:
        return self.start <= now < self.end

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


async def server_stream(stub: Any, pb2: Any, w: Window, count: int, size: int) -> None:
    expected = gen.pattern(size)
    request = pb2.StreamRequest(count=count, size=size)
    while not w.stopping:
        began = time.monotonic()
        call = stub.ServerStream(request)
        seq = 0
        async for msg in call:
            if msg.seq != seq or msg.payload != expected:
                w.problem(f"ServerStream message {seq}: seq {msg.seq}, {len(msg.payload)} B, not the expected")
                call.cancel()
                break
            seq += 1
            if w.inside(time.monotonic()):
                w.messages += 1
                w.bytes += size
        else:
            code = await call.code()
            if seq != count:
                w.problem(f"ServerStream: {seq} of {count} messages, then {code}")
            elif code != grpc.StatusCode.OK:
                w.problem(f"ServerStream: status {code}")
            else:
                finished(w, began)


async def client_stream(stub: Any, pb2: Any, w: Window, count: int, size: int) -> None:
    msgs = [pb2.EchoMsg(payload=gen.pattern(size), seq=seq) for seq in range(count)]
    while not w.stopping:
        began = time.monotonic()
        call = stub.ClientStream()
        for msg in msgs:
            await call.write(msg)
            if w.inside(time.monotonic()):
                w.messages += 1
                w.bytes += size
        await call.done_writing()
        summary = await call
        code = await call.code()
        if (summary.count, summary.bytes, summary.bad) != (count, count * size, 0):
            w.problem(
                f"ClientStream of {count} x {size} B: server counted {summary.count} messages,"
                f" {summary.bytes} B, {summary.bad} bad"
            )
        elif code != grpc.StatusCode.OK:
            w.problem(f"ClientStream: status {code}")
        else:
            finished(w, began)


async def bidi(stub: Any, pb2: Any, w: Window, count: int, size: int) -> None:
    msgs = [pb2.EchoMsg(payload=gen.pattern(size), seq=seq) for seq in range(count)]
    expected = gen.pattern(size)
    while not w.stopping:
        call = stub.Bidi()
        for seq, msg in enumerate(msgs):
            began = time.monotonic()
            await call.write(msg)
            reply = await call.read()
            if reply is grpc.aio.EOF:
                w.problem(f"Bidi: the reply stream ended after {seq} of {count} echoes ({await call.code()})")
                break
            if reply.seq != seq or reply.payload != expected:
                w.problem(f"Bidi echo {seq}: seq {reply.seq}, {len(reply.payload)} B, not the message sent")
                call.cancel()
                break
            now = time.monotonic()
            if w.inside(now):
                w.messages += 1
                w.bytes += size
                w.latencies.append(now - began)
        else:
            await call.done_writing()
            extra = await call.read()
            code = await call.code()
            if extra is not grpc.aio.EOF:
                w.problem("Bidi: a reply after the last echo")
            elif code != grpc.StatusCode.OK:
                w.problem(f"Bidi: status {code}")
            else:
                w.calls_ok_total += 1
                if w.inside(time.monotonic()):
                    w.calls += 1


async def unary_large(stub: Any, pb2: Any, w: Window, count: int, size: int) -> None:
    """Unary echo calls of one ``size``-byte message each way (``count`` is 1)."""
    payload = gen.pattern(size)
    seq = 0
    while not w.stopping:
        began = time.monotonic()
        reply = await stub.Unary(pb2.EchoMsg(payload=payload, seq=seq))
        if reply.payload != payload:
            w.problem(f"Unary {size} B: the reply is {len(reply.payload)} B, not the payload sent")
            continue
        if w.inside(time.monotonic()):
            w.messages += 1
            w.bytes += size
        finished(w, began)
        seq += 1


def finished(w: Window, began: float) -> None:
    w.calls_ok_total += 1
    now = time.monotonic()
    if w.inside(now):
        w.calls += 1
        w.latencies.append(now - began)


KINDS = {"ss": server_stream, "cs": client_stream, "bidi": bidi, "ul": unary_large}


async def worker(kind: str, stub: Any, pb2: Any, w: Window, count: int, size: int) -> None:
    while not w.stopping:
        try:
            await KINDS[kind](stub, pb2, w, count, size)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as err:
            w.problem(f"{kind}: {err.code()}: {err.details()}")
            await asyncio.sleep(0.05)  # a failing server: do not spin
        except Exception as err:  # reported, not hidden
            w.problem(f"{kind}: {type(err).__name__}: {err}")
            await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> Dict[str, Any]:
    pb2, pb2_grpc = gen.load()
    w = Window()
    options = [("grpc.max_receive_message_length", gen.MAX_STREAM_SIZE + 1024)]
    async with grpc.aio.insecure_channel(f"{args.host}:{args.port}", options=options) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        except asyncio.TimeoutError:
            return {"problems": [f"could not connect to port {args.port} within 10 s"], "problem_count": 1}
        stub = pb2_grpc.EchoStub(channel)
        tasks = [
            asyncio.ensure_future(worker(args.kind, stub, pb2, w, args.count, args.size)) for _ in range(args.calls)
        ]
        await asyncio.sleep(args.warm_up)
        print("ready", flush=True)
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if line.strip() != "go":
            w.stopping = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return {"problems": [f"expected 'go' on stdin, read {line!r}"], "problem_count": 1}
        cpu0 = time.process_time()
        w.start = time.monotonic()
        w.end = w.start + args.duration
        await asyncio.sleep(max(0.0, w.end - time.monotonic()))
        while time.monotonic() < w.end:
            await asyncio.sleep(0.001)
        cpu = time.process_time() - cpu0
        # Let each task finish its call, so that its end (status, summary) is checked too.
        w.stopping = True
        _, pending = await asyncio.wait(tasks, timeout=args.grace)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "messages": w.messages,
        "bytes": w.bytes,
        "calls": w.calls,
        "calls_ok_total": w.calls_ok_total,
        "cancelled": len(pending),
        "latencies_us": [round(x * 1e6) for x in w.latencies],
        "cpu_s": cpu,
        "duration_s": args.duration,
        "problems": w.problems,
        "problem_count": w.problem_count,
    }


async def serve() -> None:
    """--serve: one run per JSON line on stdin (the options as keys), until stdin closes."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        try:
            command = json.loads(line)
            if "check" in command:  # check.py's checks, for run.py, without starting a process
                import check

                answers = {}
                for port in command["check"]:
                    problem = await loop.run_in_executor(None, check.check, command.get("host", "127.0.0.1"), port)
                    answers[str(port)] = problem or "ok"
                print(json.dumps({"check": answers}), flush=True)
                continue
            args = parser().parse_args([])
            for key, value in command.items():
                setattr(args, key, value)
            if args.port is None or args.kind not in KINDS or args.count is None or args.size is None:
                raise ValueError("port, kind, count and size are needed")
        except (ValueError, TypeError) as exc:
            print(json.dumps({"problems": [f"bad command {line.strip()!r}: {exc}"], "problem_count": 1}), flush=True)
            continue
        print(json.dumps(await run(args)), flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", action="store_true", help="take one run per JSON line on stdin (used by run.py)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--kind", choices=sorted(KINDS))
    p.add_argument("--calls", type=int, default=1, help="concurrent calls")
    p.add_argument("--count", type=int, help="messages per call")
    p.add_argument("--size", type=int, help="payload bytes per message")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warm-up", type=float, default=1.0)
    p.add_argument("--grace", type=float, default=10.0, help="seconds the calls running at the end may take to finish")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.serve:
        asyncio.run(serve())
        return 0
    if args.port is None or args.kind is None or args.count is None or args.size is None:
        p.error("--port, --kind, --count and --size are needed (or --serve)")
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
