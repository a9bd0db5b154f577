"""Benchmark server: grpcio's asyncio server, grpc.aio, on asyncio's own event loop."""

from __future__ import annotations

import sys

import aio_server
import gen
import grpc.aio

if __name__ == "__main__":
    pb2, pb2_grpc = gen.load()
    sys.exit(aio_server.main(grpc.aio.server, pb2, pb2_grpc, use_uvloop=False))
