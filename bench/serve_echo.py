"""The echo service for ``puregrpc serve``: ``puregrpc serve serve_echo:register --workers N``.

The same servicer as grpcio_server.py and puregrpc_server.py (sync_server.make_servicer);
run.py's ``puregrpc-wN`` servers use it, with bench/ on PYTHONPATH so each worker can
import it.
"""

from __future__ import annotations

from typing import Any

import sync_server


def register(server: Any) -> None:
    pb2, pb2_grpc = sync_server.load_for_puregrpc()
    sync_server.add_to_server(server, pb2, pb2_grpc, sync_server.make_servicer(pb2, pb2_grpc))
