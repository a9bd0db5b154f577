"""What the lifecycle server scripts share: a raw-bytes test service and the READY line.

The service is ``lifecycle.Test`` with bytes in and out (no protobuf, so the
scripts start fast and need no generated code):

- ``Sleep``: sleeps ``float(request)`` seconds *without* looking at the context
  (an uncooperative handler);
- ``CoopSleep``: waits up to ``float(request)`` seconds, returning as soon as
  the RPC stops being active (a cooperative handler);
- ``Echo``: answers the request at once.

Each handler prints ``HANDLER <name>`` when it starts, so the test knows an RPC
is in flight by reading the pipe.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Tuple

import puregrpc

SERVICE = "lifecycle.Test"


def say(*words: Any) -> None:
    """One line on stdout, flushed at once (the test reads it from a pipe)."""
    sys.stdout.write(" ".join(str(word) for word in words) + "\n")
    sys.stdout.flush()


def _sleep(request: bytes, context: Any) -> bytes:
    say("HANDLER Sleep")
    time.sleep(float(request))
    return b"slept"


def _coop_sleep(request: bytes, context: Any) -> bytes:
    say("HANDLER CoopSleep")
    ended = threading.Event()
    context.add_callback(ended.set)
    deadline = time.monotonic() + float(request)
    while context.is_active():
        remaining = deadline - time.monotonic()
        if remaining <= 0 or ended.wait(remaining):
            break
    return b"coop"


def _echo(request: bytes, context: Any) -> bytes:
    return request


def handler() -> Any:
    methods = {
        "Sleep": puregrpc.unary_unary_rpc_method_handler(_sleep),
        "CoopSleep": puregrpc.unary_unary_rpc_method_handler(_coop_sleep),
        "Echo": puregrpc.unary_unary_rpc_method_handler(_echo),
    }
    return puregrpc.method_handlers_generic_handler(SERVICE, methods)


def make_server(workers: int = 4) -> Tuple[puregrpc.Server, int]:
    """A server with the test service on 127.0.0.1 and a free port (not started)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handler")
    server = puregrpc.server(pool, handlers=[handler()])
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port


def ready(port: int) -> None:
    """``READY <port> <native id of this thread>``: the server is serving."""
    say("READY", port, threading.get_native_id())
