"""A tiny service for ``puregrpc serve`` tests, with raw bytes in and out (no protobuf).

``lifecycle.Pid``:

- ``Get``: the serving process's pid, as ASCII digits;
- ``Slot``: the ``PUREGRPC_WORKER`` environment variable (a worker's slot), or ``-``;
- ``Sleep``: sleeps ``float(request)`` seconds without looking at the context
  (an uncooperative handler), then answers the pid.

``puregrpc serve pid_service:register`` with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import puregrpc

SERVICE = "lifecycle.Pid"


def _get(request: bytes, context: Any) -> bytes:
    return str(os.getpid()).encode()


def _slot(request: bytes, context: Any) -> bytes:
    return os.environ.get("PUREGRPC_WORKER", "-").encode()


def _sleep(request: bytes, context: Any) -> bytes:
    time.sleep(float(request))
    return str(os.getpid()).encode()


def register(server: Any) -> None:
    handlers = {
        "Get": puregrpc.unary_unary_rpc_method_handler(_get),
        "Slot": puregrpc.unary_unary_rpc_method_handler(_slot),
        "Sleep": puregrpc.unary_unary_rpc_method_handler(_sleep),
    }
    server.add_generic_rpc_handlers((puregrpc.method_handlers_generic_handler(SERVICE, handlers),))
