"""The ``puregrpc`` command: ``puregrpc serve MODULE:ATTR [--port N] ...``.

ATTR is a callable taking the server and registering services on it, e.g.::

    def register(server):
        helloworld_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)

or generated code's ``add_XServicer_to_server`` bound to a servicer with
``functools.partial``. Bad arguments print one line, ``puregrpc serve: ...``, on
stderr and exit with status 2; an address that cannot be bound exits with 1.

With ``--workers N`` this process becomes a supervisor (``_supervisor.py``): it binds
each address once per worker with SO_REUSEPORT and runs N copies of this same command,
each with the hidden ``--worker-fd`` and ``--listen-fds`` options, each serving the
sockets of its slot.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import pathlib
import re
import shutil
import signal
import socket
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple, Union

from . import __version__, _malloc, _server
from ._addresses import _split_host_port
from ._credentials import ServerCredentials, ssl_server_credentials, to_ssl_context
from ._run import serve_summary, serve_until_signal

_LOGGER = logging.getLogger("puregrpc")
ACCESS_LOGGER = "puregrpc.access"

PROG = "puregrpc serve"
USAGE_ERROR = 2  # bad arguments, as argparse
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_ADDRESS = "localhost:50051"
_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
_FORMAT_WITH_PID = "%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s"

OptionValue = Union[int, str]

_DESCRIPTION = """\
Serve the services that MODULE:ATTR registers, until SIGTERM or SIGINT.

MODULE is imported (the current directory is on the path) and ATTR taken from it;
dots reach further in (MODULE:obj.method). ATTR is called once with the server and
adds services to it: a function calling generated code's add_XServicer_to_server
(Greeter(), server), or that function bound to a servicer with functools.partial.

The first SIGTERM or SIGINT drains: health checks turn NOT_SERVING, new RPCs are
refused and running ones get --grace seconds to finish. A second cancels them all.

--port binds localhost only, reachable from this machine alone; to listen on every
interface (in a container, say) use --address [::]:PORT or --address 0.0.0.0:PORT.

With --workers N (Linux) a supervisor runs N worker processes on the same port
(SO_REUSEPORT), restarts any that dies, drains them all on SIGTERM and replaces
them one generation at a time on SIGHUP (each new worker imports MODULE afresh)."""

_EXAMPLES = """\
examples:
  puregrpc serve puregrpc.demo:register --port 50051
  puregrpc serve greeter_server:register --address [::]:50051 --grace 30
  puregrpc serve greeter_server:register --address [::]:50051 --health --workers 4
  puregrpc serve greeter_server:register --address [::]:50443 --tls-cert server.pem --tls-key server.key"""


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


_INT = re.compile(r"[+-]?[0-9]+")


def _option(text: str) -> Tuple[str, OptionValue]:
    """``NAME=VALUE`` as a grpcio option: an int VALUE when it reads as one, else the string."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE (e.g. grpc.max_receive_message_length=8388608), got {text!r}"
        )
    if _INT.fullmatch(value):
        return name, int(value)
    return name, value


def _parser() -> _Parser:
    parser = _Parser(prog="puregrpc", description="puregrpc: a pure-Python gRPC server", formatter_class=_Formatter)
    parser.add_argument(
        "--version", action="version", version=f"puregrpc {__version__}", help="print puregrpc's version and exit"
    )
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
        "--version", action="version", version=f"puregrpc {__version__}", help="print puregrpc's version and exit"
    )
    serve.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="address to listen on, as add_insecure_port takes it (repeatable); [::]:PORT or 0.0.0.0:PORT "
        f"listen on every interface (default {DEFAULT_ADDRESS})",
    )
    serve.add_argument(
        "--port", type=_port, help="short for --address localhost:PORT (this machine only); 0 picks a free port"
    )
    tls = serve.add_argument_group("TLS (each address is served with TLS when --tls-cert is given)")
    tls.add_argument("--tls-cert", metavar="PEM", help="the server's certificate chain, PEM (needs --tls-key)")
    tls.add_argument("--tls-key", metavar="PEM", help="the server's private key, PEM (needs --tls-cert)")
    tls.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="mTLS: require a client certificate signed by these CA certificates, PEM",
    )
    services = serve.add_argument_group("built-in services")
    services.add_argument(
        "--health",
        action="store_true",
        help='serve grpc.health.v1: "" and every registered service SERVING, NOT_SERVING from the first signal',
    )
    services.add_argument(
        "--reflection", action="store_true", help="serve server reflection (v1, v1alpha) for the registered services"
    )
    serve.add_argument(
        "--option",
        action="append",
        type=_option,
        default=[],
        metavar="NAME=VALUE",
        help="a server option, as grpc.server(options=...) takes it: VALUE is an int if it reads as one, "
        "else a string (repeatable)",
    )
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
        "--aio",
        action="store_true",
        help="serve with puregrpc.aio (async handlers, on an asyncio loop); "
        "automatic when MODULE:ATTR is an async function",
    )
    serve.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="serve from N processes sharing the port (SO_REUSEPORT, Linux), under a supervisor; "
        "the port must not be 0 (default: one process, no supervisor)",
    )
    serve.add_argument(
        "--log-level", type=_level, default="INFO", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR (INFO)"
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help=f"log one line per finished RPC on stderr (logger {ACCESS_LOGGER}, INFO; off by default)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics over HTTP on this port, all interfaces (needs prometheus-client); "
        "with --workers the supervisor serves the sums of every worker's",
    )
    # A worker of --workers: the supervisor's end of a socket pair (ready line, lifeline).
    serve.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    # ... and the listening sockets of its slot, one group per --address: "5,6;7".
    serve.add_argument("--listen-fds", type=_listen_fds, help=argparse.SUPPRESS)
    return parser


# With --workers, the supervisor serves the metrics: each worker writes its counts into
# this folder (named in the workers' environment), and the supervisor sums them.
_METRICS_FOLDER_ENV = "PUREGRPC_METRICS_FOLDER"


def _serve_metrics(server: Any, port: int) -> Optional[Any]:
    """--metrics-port: serve this process's metrics over HTTP, or, in a worker, start
    writing them for the supervisor (the writer is returned, to be stopped at the end)."""
    try:
        import prometheus_client

        from .prometheus import SnapshotWriter, enable_prometheus
    except ImportError:
        _fail("--metrics-port needs the prometheus-client package (pip install prometheus-client)")
    folder = os.environ.get(_METRICS_FOLDER_ENV)
    if folder is not None:
        return SnapshotWriter(enable_prometheus(server, registry=None), folder)
    enable_prometheus(server)
    _start_metrics_http(prometheus_client, port, None)
    return None


def _start_metrics_http(prometheus_client: Any, port: int, registry: Any) -> None:
    try:
        if registry is None:
            prometheus_client.start_http_server(port)
        else:
            prometheus_client.start_http_server(port, registry=registry)
    except OSError as exc:
        print(f"{PROG}: cannot serve metrics on port {port}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _supervisor_metrics(port: int) -> str:
    """The supervisor's side of --metrics-port: a folder for the workers' counts (named in
    their environment) and an HTTP endpoint serving the sums."""
    import tempfile

    try:
        import prometheus_client

        from .prometheus import FolderCollector
    except ImportError:
        _fail("--metrics-port needs the prometheus-client package (pip install prometheus-client)")
    folder = tempfile.mkdtemp(prefix="puregrpc-metrics-")
    registry = prometheus_client.CollectorRegistry()
    registry.register(FolderCollector(folder))
    _start_metrics_http(prometheus_client, port, registry)
    os.environ[_METRICS_FOLDER_ENV] = folder
    return folder


# -- checking the arguments (in the supervisor too, before any worker starts) --------


def _read_pem(path: str, flag: str) -> bytes:
    try:
        return pathlib.Path(path).read_bytes()
    except OSError as exc:
        _fail(f"{flag}: cannot read {path!r}: {exc.strerror or exc}")


def _credentials(args: argparse.Namespace) -> Optional[ServerCredentials]:
    """TLS credentials from --tls-cert/--tls-key/--tls-client-ca, checked now; None without TLS."""
    if (args.tls_cert is None) != (args.tls_key is None):
        _fail("--tls-cert and --tls-key go together: give both, or neither")
    if args.tls_cert is None:
        if args.tls_client_ca is not None:
            _fail("--tls-client-ca needs --tls-cert and --tls-key (mTLS is TLS with client certificates)")
        return None
    cert = _read_pem(args.tls_cert, "--tls-cert")
    key = _read_pem(args.tls_key, "--tls-key")
    client_ca = None if args.tls_client_ca is None else _read_pem(args.tls_client_ca, "--tls-client-ca")
    credentials = ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )
    try:
        to_ssl_context(credentials)
    except (ssl.SSLError, ValueError, OSError) as exc:
        _fail(f"cannot use --tls-cert {args.tls_cert!r} with --tls-key {args.tls_key!r}: {exc}")
    return credentials


def _addresses(args: argparse.Namespace) -> List[str]:
    addresses = list(args.address)
    if args.port is not None:
        addresses.append(f"localhost:{args.port}")
    return addresses or [DEFAULT_ADDRESS]


def _check_for_workers(args: argparse.Namespace, addresses: List[str]) -> None:
    """What --workers cannot do, as one line and exit status 2."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        _fail(
            f"--workers needs Linux (several processes sharing a port with SO_REUSEPORT); on {sys.platform} "
            "run one process per port instead"
        )
    for address in addresses:
        if address.startswith("unix"):
            _fail(f"--workers serves TCP addresses only (SO_REUSEPORT), not {address!r}")
        try:
            _, port = _split_host_port(address)
        except RuntimeError as exc:
            _fail(str(exc))
        if port == 0:
            _fail(f"--workers needs a fixed port, not 0 in {address!r}: every worker would pick a different one")


# -- the single server (one process, or one worker) ------------------------------------


def service_names(server: Any) -> List[str]:
    """The full names of the services registered on a puregrpc server so far: those of
    registered method handlers and of generic handlers that name their service."""
    registry = server._core.registry
    names = {path.split("/")[1] for path in registry.methods if path.count("/") == 2}
    for handler in registry.generic:
        name_of = getattr(handler, "service_name", None)
        if callable(name_of):
            try:
                name = name_of()
            except Exception:  # a handler of the user's that cannot say: it is simply not listed
                continue
            if isinstance(name, str) and name:
                names.add(name)
    return sorted(names)


def _add_builtin_services(server: Any, args: argparse.Namespace) -> None:
    from .health import SERVICE_NAME as HEALTH
    from .health import SERVING, add_health_servicer
    from .reflection import SERVICE_NAMES as REFLECTION
    from .reflection import enable_server_reflection

    registered = service_names(server)
    if args.health:
        if HEALTH in registered:
            _LOGGER.info("%s serves %s itself: --health adds nothing", args.target, HEALTH)
        else:
            health = add_health_servicer(server)  # "" SERVING; NOT_SERVING when the drain begins
            for name in registered:
                if name not in REFLECTION:
                    health.set(name, SERVING)
    if args.reflection:
        if any(name in registered for name in REFLECTION):
            _LOGGER.info("%s serves reflection itself: --reflection adds nothing", args.target)
        else:
            enable_server_reflection([name for name in service_names(server) if name not in REFLECTION], server)


def _tell_supervisor(fd: int) -> None:
    """Worker: say ``ready`` on the supervisor's socket, then drain when it closes
    (the supervisor died: nobody would ever stop this worker otherwise)."""
    sock = socket.socket(fileno=fd)
    sock.sendall(f"ready {os.getpid()}\n".encode())

    def lifeline() -> None:
        try:
            while sock.recv(64):
                pass
        except OSError:
            pass
        _LOGGER.warning("the supervisor has gone: draining")
        os.kill(os.getpid(), signal.SIGTERM)  # run() drains

    threading.Thread(target=lifeline, name="puregrpc-lifeline", daemon=True).start()


def _serve(args: argparse.Namespace, addresses: List[str], credentials: Optional[ServerCredentials]) -> int:
    register = _load(args.target)
    _malloc.tune()  # this process is ours: large messages without page-fault churn (see _malloc)
    options: List[Tuple[str, OptionValue]] = list(args.option)
    # Looked up now, not at import: an instrumentor (opentelemetry-instrument) may wrap it.
    pool = ThreadPoolExecutor(max_workers=args.max_workers, thread_name_prefix="puregrpc-handler")
    if args.aio or inspect.iscoroutinefunction(register):
        return _serve_aio(args, addresses, credentials, register, options, pool)
    try:
        server = _server.server(pool, options=options)
    except (TypeError, ValueError) as exc:
        _fail(f"bad --option: {exc}")
    register(server)
    _add_builtin_services(server, args)
    metrics_writer = None if args.metrics_port is None else _serve_metrics(server, args.metrics_port)
    bound = _bind(server, addresses, credentials, args.listen_fds)
    server.start()
    started = time.monotonic()
    serve_until_signal(server, args.grace, args.drain_delay, lambda: _ready(args, bound, credentials))
    if metrics_writer is not None:
        metrics_writer.stop()  # the last counts, for the supervisor
    _LOGGER.info(serve_summary(server, started))
    return 0


def _listen_fds(text: str) -> List[List[int]]:
    """``--listen-fds 5,6;7``: the file descriptors of each address's listening sockets."""
    return [[int(fd) for fd in group.split(",")] for group in text.split(";")]


def _bind(
    server: Any,
    addresses: List[str],
    credentials: Optional[ServerCredentials],
    listen_fds: Optional[List[List[int]]] = None,
) -> List[str]:
    """Bind each address (or, in a worker, serve its slot's sockets: ``listen_fds``)."""
    if listen_fds is not None and len(listen_fds) != len(addresses):
        _fail(f"--listen-fds names {len(listen_fds)} addresses, not {len(addresses)}")
    bound = []
    for index, address in enumerate(addresses):
        try:
            if listen_fds is not None:
                socks = [socket.socket(fileno=fd) for fd in listen_fds[index]]
                context = None if credentials is None else to_ssl_context(credentials)
                port = server._core.add_shared_sockets(socks, context)
            elif credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            if isinstance(exc.__cause__, OSError):  # a busy port, no permission: not a usage error
                print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(1) from None
            _fail(str(exc))
        host = address.rsplit(":", 1)[0] if not address.startswith("unix") else address
        bound.append(address if address.startswith("unix") else f"{host}:{port}")
    return bound


def _ready(args: argparse.Namespace, bound: List[str], credentials: Optional[ServerCredentials]) -> None:
    """Serving, and SIGTERM and SIGINT drain from here on: say so (and to a supervisor)."""
    tls = "" if credentials is None else " with TLS" if args.tls_client_ca is None else " with mTLS"
    if args.aio:
        _LOGGER.info("asyncio server (puregrpc.aio): async handlers run on the loop")
    _LOGGER.info("serving %s on %s%s (pid %d)", args.target, ", ".join(bound), tls, os.getpid())
    if args.worker_fd is not None:
        _tell_supervisor(args.worker_fd)


def _serve_aio(
    args: argparse.Namespace,
    addresses: List[str],
    credentials: Optional[ServerCredentials],
    register: Callable[[Any], Any],
    options: List[Tuple[str, OptionValue]],
    pool: ThreadPoolExecutor,
) -> int:
    """The same command with a puregrpc.aio server, on an asyncio loop (uvloop where installed)."""
    import asyncio

    from . import aio
    from ._loop import _new_event_loop

    args.aio = True
    try:
        server = aio.server(migration_thread_pool=pool, options=options)
    except (TypeError, ValueError) as exc:
        _fail(f"bad --option: {exc}")

    async def main() -> None:
        registered = register(server)
        if inspect.isawaitable(registered):
            await registered
        _add_builtin_services(server, args)
        metrics_writer = None if args.metrics_port is None else _serve_metrics(server, args.metrics_port)
        bound = _bind(server, addresses, credentials, args.listen_fds)
        await server.start()
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        forced = asyncio.Event()
        received: List[int] = []
        tasks: List[Any] = []

        async def drain() -> None:
            server._core.notify_drain()
            if args.drain_delay > 0:
                try:
                    await asyncio.wait_for(forced.wait(), args.drain_delay)
                except asyncio.TimeoutError:
                    pass
            await server.stop(args.grace)

        def on_signal(signum: int) -> None:
            received.append(signum)
            name = signal.Signals(signum).name
            if len(received) == 1:
                _LOGGER.info(
                    "%s received: draining (drain delay %gs, grace %ss); send it again to cancel every RPC",
                    name,
                    args.drain_delay,
                    args.grace,
                )
                tasks.append(loop.create_task(drain()))
            else:
                _LOGGER.info("%s received again: cancelling every RPC", name)
                forced.set()
                tasks.append(loop.create_task(server.stop(None)))

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        _ready(args, bound, credentials)
        await server.wait_for_termination()
        # Responses already written leave before the process does (as run()).
        await loop.run_in_executor(None, server._core.sockets_closed.wait, 1.0)
        if metrics_writer is not None:
            metrics_writer.stop()
        _LOGGER.info(serve_summary(server, started))

    loop = _new_event_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return 0


def configure_logging(args: argparse.Namespace) -> None:
    """Log lines on stderr at --log-level; with --workers each line names its process."""
    supervised = args.workers is not None or args.worker_fd is not None
    logging.basicConfig(level=args.log_level, format=_FORMAT_WITH_PID if supervised else _FORMAT)
    # The access log is the server's (one INFO line per finished RPC); the command shows it on request only,
    # whatever --log-level says (the root logger's stderr handler takes every level).
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO if args.access_log else logging.WARNING)


def main(argv: Optional[List[str]] = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, unknown = parser.parse_known_args(arguments)
    if unknown:  # named by the command's parser, so that its --help is the one suggested
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    configure_logging(args)
    addresses = _addresses(args)
    credentials = _credentials(args)
    if args.workers is not None and args.worker_fd is None:
        _check_for_workers(args, addresses)
        from ._supervisor import supervise

        folder = None if args.metrics_port is None else _supervisor_metrics(args.metrics_port)
        try:
            return supervise(arguments, args.workers, target=args.target, addresses=addresses)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
    return _serve(args, addresses, credentials)


if __name__ == "__main__":
    sys.exit(main())
