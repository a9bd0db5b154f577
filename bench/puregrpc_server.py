"""Benchmark server (c): puregrpc, the same code as grpcio_server.py on puregrpc.server."""

from __future__ import annotations

import sys

import sync_server

import puregrpc

if __name__ == "__main__":
    sys.exit(sync_server.serve(puregrpc.server))
