"""Benchmark server: puregrpc, the same code as grpcio_server.py on puregrpc.server.

Where grpcio does not import (another interpreter: run.py --runtime), the servicer is
registered from the protobuf descriptor (puregrpc.add_servicer) instead of generated code.

With PUREGRPC_BENCH_METRICS=1 in the environment, the server also counts its RPCs for
Prometheus (puregrpc.prometheus), to measure what metrics cost; with
PUREGRPC_BENCH_ACCESS_LOG=1 it writes the access log (one line per RPC) to stderr.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sync_server

import puregrpc
from puregrpc import _malloc


def with_metrics(pool: ThreadPoolExecutor) -> Any:
    from puregrpc.prometheus import enable_prometheus

    server = puregrpc.server(pool)
    enable_prometheus(server)
    return server


if __name__ == "__main__":
    # As ``puregrpc serve`` does (PUREGRPC_MALLOC_TUNING=0 to measure glibc's defaults).
    _malloc.tune()
    if os.environ.get("PUREGRPC_BENCH_ACCESS_LOG") == "1":
        import logging

        access = logging.getLogger("puregrpc.access")
        access.setLevel(logging.INFO)
        access.addHandler(logging.StreamHandler())
    metrics = os.environ.get("PUREGRPC_BENCH_METRICS") == "1"
    pb2, pb2_grpc = sync_server.load_for_puregrpc()
    sys.exit(sync_server.serve(with_metrics if metrics else puregrpc.server, pb2, pb2_grpc))
