"""The ``puregrpc`` command: ``puregrpc serve MODULE:ATTR [--port N] ...``.

ATTR is a callable taking the server and registering services on it, e.g.::

    def register(server):
        helloworld_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)

or generated code's ``add_XServicer_to_server`` bound to a servicer with
``functools.partial``. Bad arguments print one line, ``puregrpc serve: ...``, on
stderr and exit with status 2; an address that cannot be bound exits with 1.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, NoReturn, Optional

from . import _server
from ._run import run, serve_summary

_LOGGER = logging.getLogger("puregrpc")

PROG = "puregrpc serve"
USAGE_ERROR = 2  # bad arguments, as argparse
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_DESCRIPTION = """\
Serve the services that MODULE:ATTR registers, until SIGTERM or SIGINT.

MODULE is imported (the current directory is on the path) and ATTR taken from it;
dots reach further in (MODULE:obj.method). ATTR is called once with the server and
adds services to it: a function calling generated code's add_XServicer_to_server
(Greeter(), server), or that function bound to a servicer with functools.partial.

The first SIGTERM or SIGINT drains: health checks turn NOT_SERVING, new RPCs are
refused and running ones get --grace seconds to finish. A second cancels them all."""

_EXAMPLES = """\
examples:
  puregrpc serve puregrpc.demo:register --port 50051
  puregrpc serve greeter_server:register --address [::]:50051 --grace 30"""


def _fail(message: str, prog: str = PROG) -> NoReturn:
    """A bad argument: one line on stderr, exit status 2 (never a traceback)."""
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_ERROR)


def _load(target: str) -> Callable[[Any], Any]:
    """The callable that ``MODULE:ATTR`` names; exits with a one-line message if there is none."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        _fail(f"expected MODULE:ATTR (e.g. puregrpc.demo:register), got {target!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        _fail(f"cannot import {module_name!r}: {exc}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            _fail(f"{module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        _fail(f"{target} is not callable (it is a {type(obj).__name__}): ATTR must be a callable taking the server")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # no signature to check (some builtins): call it and see
        return obj  # type: ignore[no-any-return]
    try:
        signature.bind(None)
    except TypeError:
        _fail(f"{target} cannot be called with one argument, the server: its signature is {signature}")
    return obj  # type: ignore[no-any-return]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: Dict[str, _Parser] = {}

    def error(self, message: str) -> NoReturn:
        """argparse's errors as one line and exit status 2 (the usage is in --help)."""
        _fail(f"{message} (see {self.prog} --help)", self.prog)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=min(100, shutil.get_terminal_size().columns - 2))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 0-65535")
    return port


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _level(text: str) -> str:
    level = text.upper()
    if level not in _LEVELS:
        raise argparse.ArgumentTypeError(f"unknown log level {text!r} (choose from {', '.join(_LEVELS)})")
    return level


def _parser() -> _Parser:
    parser = _Parser(prog="puregrpc", description="puregrpc: a pure-Python gRPC server", formatter_class=_Formatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    serve = commands.add_parser(
        "serve",
        help="serve the services that MODULE:ATTR registers",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=_Formatter,
    )
    parser.commands["serve"] = serve
    serve.add_argument("target", metavar="MODULE:ATTR", help="a callable taking the server, adding services to it")
    serve.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="address to listen on, as add_insecure_port takes it (repeatable)",
    )
    serve.add_argument("--port", type=_port, help="short for --address localhost:PORT; 0 picks a free port")
    serve.add_argument(
        "--grace", type=_seconds, default=10.0, metavar="SECONDS", help="time RPCs get to finish when draining (10)"
    )
    serve.add_argument(
        "--drain-delay",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="keep serving this long after the first signal, before the drain (0)",
    )
    serve.add_argument("--max-workers", type=_positive_int, default=10, metavar="N", help="handler threads (10)")
    serve.add_argument(
        "--log-level", type=_level, default="INFO", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (INFO)"
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics over HTTP on this port, all interfaces (needs prometheus-client)",
    )
    return parser


def _serve_metrics(server: Any, port: int) -> None:
    try:
        import prometheus_client

        from .prometheus import enable_prometheus
    except ImportError:
        _fail("--metrics-port needs the prometheus-client package (pip install prometheus-client)")
    enable_prometheus(server)
    try:
        prometheus_client.start_http_server(port)
    except OSError as exc:
        print(f"{PROG}: cannot serve metrics on port {port}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command's parser, so that its --help is the one suggested
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    register = _load(args.target)
    addresses = list(args.address)
    if args.port is not None:
        addresses.append(f"localhost:{args.port}")
    if not addresses:
        addresses.append("localhost:50051")
    # Looked up now, not at import: an instrumentor (opentelemetry-instrument) may wrap it.
    server = _server.server(ThreadPoolExecutor(max_workers=args.max_workers, thread_name_prefix="puregrpc-handler"))
    register(server)
    if args.metrics_port is not None:
        _serve_metrics(server, args.metrics_port)
    bound = []
    for address in addresses:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            if isinstance(exc.__cause__, OSError):  # a busy port, no permission: not a usage error
                print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            _fail(str(exc))
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
