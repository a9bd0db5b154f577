"""Benchmark server: grpcio's sync server, 10 worker threads."""

from __future__ import annotations

import sys

import gen
import grpc
import sync_server

if __name__ == "__main__":
    pb2, pb2_grpc = gen.load()
    sys.exit(sync_server.serve(grpc.server, pb2, pb2_grpc))
