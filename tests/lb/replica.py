"""One puregrpc replica for the load-balancer tests, served by ``puregrpc.run()``.

    python replica.py --port PORT --name NAME [--drain-delay S] [--grace S] [--option NAME=INT ...]

Serves ``lb.Replica`` with raw bytes in and out (no protobuf, so it starts fast)
and the built-in health service (every service turns NOT_SERVING when the drain
begins). Prints ``READY <port> <pid>`` once serving, ``DRAINING`` when the first
SIGTERM or SIGINT starts the drain, ``EXIT`` after ``run()`` has returned.

Methods of ``lb.Replica``:

- ``Whoami`` (unary): the replica's name;
- ``Count`` (server streaming): request ``b"N"``, answers ``N`` messages ``b"<name>:<i>"``;
- ``Sum`` (client streaming): requests are ASCII integers, answers their sum;
- ``Size`` (client streaming): answers the total size of the requests, in ASCII;
- ``Echo`` (unary): answers the request;
- ``Fail`` (unary): request ``b"CODE details"``, aborts with that status code name and details;
- ``FailAfter`` (server streaming): request ``b"N CODE details"``, sends ``N`` messages, then aborts;
- ``Slow`` (unary): sleeps ``float(request)`` seconds, then answers the name.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, List, Tuple

import puregrpc
from puregrpc.health import add_health_servicer

SERVICE = "lb.Replica"


def say(*words: Any) -> None:
    sys.stdout.write(" ".join(str(word) for word in words) + "\n")
    sys.stdout.flush()


def parse_option(text: str) -> Tuple[str, int]:
    name, _, value = text.partition("=")
    return name, int(value)


def make_handler(name: str) -> Any:
    me = name.encode()

    def whoami(request: bytes, context: Any) -> bytes:
        return me

    def count(request: bytes, context: Any) -> Iterator[bytes]:
        for i in range(int(request)):
            yield me + b":" + str(i).encode()

    def total(requests: Iterator[bytes], context: Any) -> bytes:
        return str(sum(int(item) for item in requests)).encode()

    def size(requests: Iterator[bytes], context: Any) -> bytes:
        return str(sum(len(item) for item in requests)).encode()

    def echo(request: bytes, context: Any) -> bytes:
        return request

    def fail(request: bytes, context: Any) -> bytes:
        code, _, details = request.decode().partition(" ")
        context.abort(puregrpc.StatusCode[code], details)
        raise AssertionError("abort() returned")

    def fail_after(request: bytes, context: Any) -> Iterator[bytes]:
        n, code, details = request.decode().split(" ", 2)
        for i in range(int(n)):
            yield me + b":" + str(i).encode()
        context.abort(puregrpc.StatusCode[code], details)

    def slow(request: bytes, context: Any) -> bytes:
        time.sleep(float(request))
        return me

    methods = {
        "Whoami": puregrpc.unary_unary_rpc_method_handler(whoami),
        "Count": puregrpc.unary_stream_rpc_method_handler(count),
        "Sum": puregrpc.stream_unary_rpc_method_handler(total),
        "Size": puregrpc.stream_unary_rpc_method_handler(size),
        "Echo": puregrpc.unary_unary_rpc_method_handler(echo),
        "Fail": puregrpc.unary_unary_rpc_method_handler(fail),
        "FailAfter": puregrpc.unary_stream_rpc_method_handler(fail_after),
        "Slow": puregrpc.unary_unary_rpc_method_handler(slow),
    }
    return puregrpc.method_handlers_generic_handler(SERVICE, methods)


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--drain-delay", type=float, default=0.0)
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--option", action="append", default=[], type=parse_option)
    args = parser.parse_args(argv)

    server = puregrpc.server(ThreadPoolExecutor(max_workers=8), options=args.option)
    server.add_generic_rpc_handlers((make_handler(args.name),))
    add_health_servicer(server)
    server.add_drain_listener(lambda: say("DRAINING"))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    say("READY", port, os.getpid())
    puregrpc.run(server, grace=args.grace, drain_delay=args.drain_delay)
    say("EXIT")


if __name__ == "__main__":
    main(sys.argv[1:])
