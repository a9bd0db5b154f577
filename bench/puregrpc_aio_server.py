"""Benchmark server: puregrpc.aio, the same code as grpcio_aio_server.py on puregrpc.aio.server.

Runs on uvloop where it imports (as grpclib_server.py), else on asyncio's own loop. Where
grpcio does not import (another interpreter: run.py --runtime), the servicer is registered
from the protobuf descriptor (puregrpc.add_servicer) instead of generated code.
"""

from __future__ import annotations

import sys

import aio_server
import sync_server

from puregrpc import _malloc
from puregrpc import aio as puregrpc_aio

if __name__ == "__main__":
    # As ``puregrpc serve`` does (PUREGRPC_MALLOC_TUNING=0 to measure glibc's defaults).
    _malloc.tune()
    pb2, pb2_grpc = sync_server.load_for_puregrpc()
    use_uvloop = aio_server.loop_name() == "uvloop"
    sys.exit(aio_server.main(puregrpc_aio.server, pb2, pb2_grpc, use_uvloop=use_uvloop))
