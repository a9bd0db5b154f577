"""The ``puregrpc`` command: ``puregrpc serve MODULE:ATTR [--port N] ...``.

ATTR is a callable taking the server and registering services on it, the shape
of grpcio-tools' ``add_XServicer_to_server`` bound to a servicer, e.g.::

    def register(server):
        helloworld_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional

from ._run import run, serve_summary
from ._server import server as make_server

_LOGGER = logging.getLogger("puregrpc")


def _load(target: str) -> Callable[[Any], Any]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise SystemExit(f"puregrpc serve: expected MODULE:ATTR, got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"puregrpc serve: cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SystemExit(f"puregrpc serve: {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise SystemExit(f"puregrpc serve: {target} is not callable")
    return obj  # type: ignore[no-any-return]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="puregrpc", description="puregrpc: a pure-Python gRPC server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the services that MODULE:ATTR registers")
    serve.add_argument("target", metavar="MODULE:ATTR", help="callable that takes the server and adds services")
    serve.add_argument(
        "--address", action="append", default=[], metavar="HOST:PORT", help="address to listen on (repeatable)"
    )
    serve.add_argument("--port", type=int, help="short for --address localhost:PORT")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds RPCs may finish after the drain (10)")
    serve.add_argument(
        "--drain-delay", type=float, default=0.0, help="seconds to keep serving after SIGTERM, before stopping (0)"
    )
    serve.add_argument("--max-workers", type=int, default=10, help="handler threads (10)")
    serve.add_argument("--log-level", default="INFO")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    register = _load(args.target)
    addresses = list(args.address)
    if args.port is not None:
        addresses.append(f"localhost:{args.port}")
    if not addresses:
        addresses.append("localhost:50051")
    server = make_server(ThreadPoolExecutor(max_workers=args.max_workers, thread_name_prefix="puregrpc-handler"))
    register(server)
    bound = []
    for address in addresses:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise SystemExit(f"puregrpc serve: {exc}") from None
        host = address.rsplit(":", 1)[0] if not address.startswith("unix") else address
        bound.append(address if address.startswith("unix") else f"{host}:{port}")
    server.start()
    started = time.monotonic()
    _LOGGER.info("serving %s on %s (pid %d)", args.target, ", ".join(bound), os.getpid())
    run(server, grace=args.grace, drain_delay=args.drain_delay)
    _LOGGER.info(serve_summary(server, started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
