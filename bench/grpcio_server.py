"""Benchmark server (a): grpcio's sync server, 10 worker threads."""

from __future__ import annotations

import sys

import grpc
import sync_server

if __name__ == "__main__":
    sys.exit(sync_server.serve(grpc.server))
