"""Observability side by side with grpcio's server: OpenTelemetry (explicit and zero-code),
py-grpc-prometheus, puregrpc's own Prometheus metrics and stats, and grpcio's type checks.

The same service, interceptors and client calls run against ``grpc.server`` and
``puregrpc.server``; what the third-party packages record must be the same.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Tuple

import grpc
import pytest

import puregrpc

from ._support import TIMEOUT, Recorder

otel_sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.instrumentation.grpc import server_interceptor  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from py_grpc_prometheus.prometheus_server_interceptor import PromServerInterceptor  # noqa: E402

from puregrpc.prometheus import enable_prometheus  # noqa: E402

SERVICE = "obs.Probe"


def _handlers(calls: Recorder) -> List[Any]:
    def echo(request: bytes, context: Any) -> bytes:
        calls.add("Echo")
        return request

    def missing(request: bytes, context: Any) -> bytes:
        calls.add("Missing")
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b""

    def boom(request: bytes, context: Any) -> bytes:
        calls.add("Boom")
        raise RuntimeError("boom")

    def repeat(request: bytes, context: Any) -> Iterator[bytes]:
        calls.add("Repeat")
        for _ in range(3):
            yield request

    def count(requests: Iterator[bytes], context: Any) -> bytes:
        calls.add("Count")
        return str(sum(1 for _ in requests)).encode()

    def chat(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        calls.add("Chat")
        yield from requests

    methods = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
        "Boom": grpc.unary_unary_rpc_method_handler(boom),
        "Repeat": grpc.unary_stream_rpc_method_handler(repeat),
        "Count": grpc.stream_unary_rpc_method_handler(count),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
    }
    return [grpc.method_handlers_generic_handler(SERVICE, methods)]


@contextlib.contextmanager
def running(factory: Callable[..., Any], interceptors: List[Any], calls: Recorder) -> Iterator[Tuple[Any, int]]:
    pool = ThreadPoolExecutor(8)
    server = factory(pool, handlers=_handlers(calls), interceptors=interceptors)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        yield server, port
    finally:
        server.stop(0).wait(TIMEOUT)
        pool.shutdown(wait=False)


def exercise(port: int) -> None:
    """The same calls against either server: every RPC type, an abort, an exception."""
    with grpc.insecure_channel(f"localhost:{port}") as ch:
        assert ch.unary_unary(f"/{SERVICE}/Echo")(b"hi", metadata=[("x-k", "v")], timeout=TIMEOUT) == b"hi"
        for method in ("Missing", "Boom"):
            with pytest.raises(grpc.RpcError):
                ch.unary_unary(f"/{SERVICE}/{method}")(b"", timeout=TIMEOUT)
        assert list(ch.unary_stream(f"/{SERVICE}/Repeat")(b"r", timeout=TIMEOUT)) == [b"r"] * 3
        assert ch.stream_unary(f"/{SERVICE}/Count")(iter([b"a", b"b"]), timeout=TIMEOUT) == b"2"
        assert list(ch.stream_stream(f"/{SERVICE}/Chat")(iter([b"1", b"2"]), timeout=TIMEOUT)) == [b"1", b"2"]


FLAVOURS: Dict[str, Callable[..., Any]] = {"grpcio": grpc.server, "puregrpc": puregrpc.server}


# --- OpenTelemetry, explicit interceptor ---------------------------------------------------


def _span_summary(exporter: InMemorySpanExporter) -> List[Tuple[Any, ...]]:
    out = []
    for span in exporter.get_finished_spans():
        attributes = {k: v for k, v in span.attributes.items() if k not in ("net.peer.port", "net.peer.ip")}
        events = tuple((e.name, e.attributes.get("exception.type")) for e in span.events)
        out.append((span.name, span.kind.name, span.status.status_code.name, tuple(sorted(attributes.items())), events))
    return sorted(out)


def _otel_spans(factory: Callable[..., Any]) -> List[Tuple[Any, ...]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    calls = Recorder()
    with running(factory, [server_interceptor(tracer_provider=provider)], calls) as (_, port):
        exercise(port)
    deadline = time.monotonic() + TIMEOUT
    while len(exporter.get_finished_spans()) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    return _span_summary(exporter)


def test_opentelemetry_spans_match_grpcio() -> None:
    """Before, every RPC failed UNKNOWN: OpenTelemetry's interceptor reads ``.key`` and
    ``.value`` of invocation metadata items, which were plain tuples."""
    ours = _otel_spans(puregrpc.server)
    theirs = _otel_spans(grpc.server)
    assert len(ours) == 6
    assert ours == theirs
    names = {span[0]: span for span in ours}
    assert dict(names[f"/{SERVICE}/Missing"][3])["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert names[f"/{SERVICE}/Missing"][4] == (("exception", "Exception"),)  # one event per abort
    assert all(span[1] == "SERVER" for span in ours)


def test_invocation_metadata_items_have_key_and_value() -> None:
    seen: Dict[str, Any] = {}

    def handler(request: bytes, context: Any) -> bytes:
        seen["items"] = context.invocation_metadata()
        return b""

    class Interceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            seen["details"] = details.invocation_metadata
            return continuation(details)

    pool = ThreadPoolExecutor(2)
    server = puregrpc.server(
        pool,
        handlers=[grpc.method_handlers_generic_handler("m.S", {"M": grpc.unary_unary_rpc_method_handler(handler)})],
        interceptors=[Interceptor()],
    )
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        with grpc.insecure_channel(f"localhost:{port}") as ch:
            ch.unary_unary("/m.S/M")(b"", metadata=[("k", "v"), ("k-bin", b"\x00\x01")], timeout=TIMEOUT)
    finally:
        server.stop(0)
        pool.shutdown(wait=False)
    for items in (seen["items"], seen["details"]):
        pairs = {item.key: item.value for item in items}
        assert pairs["k"] == "v" and pairs["k-bin"] == b"\x00\x01"
        assert dict(items)["k"] == "v"  # still unpackable as (key, value)
        assert "user-agent" in pairs  # as grpcio: the client's user agent is metadata


# --- OpenTelemetry, zero-code -----------------------------------------------------------------

_APP = textwrap.dedent(
    """
    from concurrent.futures import ThreadPoolExecutor
    import grpc
    import puregrpc

    handler = grpc.method_handlers_generic_handler(
        "zero.Code", {"Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request)}
    )
    server = puregrpc.server(ThreadPoolExecutor(2), handlers=[handler])
    port = server.add_insecure_port("localhost:0")
    server.start()
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        assert channel.unary_unary("/zero.Code/Echo")(b"hi", timeout=10) == b"hi"
    server.stop(None)
    """
)


def _console_spans(stdout: str) -> List[Dict[str, Any]]:
    """The JSON objects the console span exporter printed, one after another."""
    decoder = json.JSONDecoder()
    spans, pos = [], 0
    while True:
        start = stdout.find("{", pos)
        if start < 0:
            return spans
        obj, pos = decoder.raw_decode(stdout, start)
        if isinstance(obj, dict) and "kind" in obj:
            spans.append(obj)


def _run_instrumented(tmp_path: Any, **env: str) -> List[Dict[str, Any]]:
    app = tmp_path / "app.py"
    app.write_text(_APP)
    command = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    environment = dict(os.environ, OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none")
    environment.update(OTEL_LOGS_EXPORTER="none", **env)
    result = subprocess.run(
        [command, sys.executable, str(app)], capture_output=True, text=True, timeout=60, env=environment
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return _console_spans(result.stdout)


def test_zero_code_opentelemetry_traces_puregrpc(tmp_path: Any) -> None:
    spans = _run_instrumented(tmp_path)
    servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    assert [s["name"] for s in servers] == ["/zero.Code/Echo"]
    assert servers[0]["attributes"]["rpc.grpc.status_code"] == 0
    # The client span (grpcio's own instrumentor) and ours share the trace.
    clients = [s for s in spans if s["kind"] == "SpanKind.CLIENT"]
    assert clients and clients[0]["context"]["trace_id"] == servers[0]["context"]["trace_id"]


def test_zero_code_span_comes_from_the_puregrpc_instrumentor(tmp_path: Any) -> None:
    spans = _run_instrumented(tmp_path, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="puregrpc")
    assert not [s for s in spans if s["kind"] == "SpanKind.SERVER"]


# --- py-grpc-prometheus's interceptor -----------------------------------------------------------


def _samples(registry: CollectorRegistry) -> Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name.endswith(("_created", "_sum")) or "le" in sample.labels:
                continue
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.mark.parametrize("skip_exceptions", [False, True])
def test_py_grpc_prometheus_interceptor_matches_grpcio(skip_exceptions: bool) -> None:
    """Before, it read grpcio's private ``context._state`` and failed every successful
    unary RPC; with ``skip_exceptions=True`` it ran the handler twice."""
    results = {}
    for name, factory in FLAVOURS.items():
        registry = CollectorRegistry()
        calls = Recorder()
        interceptor = PromServerInterceptor(
            enable_handling_time_histogram=True, skip_exceptions=skip_exceptions, registry=registry
        )
        with running(factory, [interceptor], calls) as (_, port):
            exercise(port)
        results[name] = (_samples(registry), sorted(calls.events))
    assert results["puregrpc"] == results["grpcio"]
    samples, calls = results["puregrpc"]
    assert calls == sorted(["Echo", "Missing", "Boom", "Repeat", "Count", "Chat"])  # each ran once
    ok = (("grpc_code", "OK"), ("grpc_method", "Echo"), ("grpc_service", SERVICE), ("grpc_type", "UNARY"))
    assert samples[("grpc_server_handled_total", ok)] == 1


# --- puregrpc's own Prometheus metrics ---------------------------------------------------------


def test_prometheus_metrics() -> None:
    registry = CollectorRegistry()
    calls = Recorder()
    with running(puregrpc.server, [], calls) as (server, port):
        enable_prometheus(server, registry)
        exercise(port)
        exercise(port)
        samples = _samples(registry)

    def value(name: str, method: str, kind: str, **extra: str) -> float:
        labels = {"grpc_method": method, "grpc_service": SERVICE, "grpc_type": kind, **extra}
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("grpc_server_started_total", "Echo", "UNARY") == 2
    assert value("grpc_server_handled_total", "Echo", "UNARY", grpc_code="OK") == 2
    assert value("grpc_server_handled_total", "Missing", "UNARY", grpc_code="NOT_FOUND") == 2
    assert value("grpc_server_handled_total", "Boom", "UNARY", grpc_code="UNKNOWN") == 2
    assert value("grpc_server_msg_sent_total", "Repeat", "SERVER_STREAMING") == 6
    assert value("grpc_server_msg_received_total", "Count", "CLIENT_STREAMING") == 4
    assert value("grpc_server_msg_received_total", "Chat", "BIDI_STREAMING") == 4
    assert value("grpc_server_msg_sent_total", "Chat", "BIDI_STREAMING") == 4
    assert value("grpc_server_handling_seconds_count", "Chat", "BIDI_STREAMING") == 2
    # The same names and label sets as py-grpc-prometheus gives for the same calls.
    theirs = CollectorRegistry()
    with running(grpc.server, [PromServerInterceptor(registry=theirs)], Recorder()) as (_, port):
        exercise(port)
        exercise(port)
    # (py-grpc-prometheus counts no handled_total for response streams; go-grpc-prometheus
    # and puregrpc do.)
    handled = {k: v for k, v in _samples(theirs).items() if k[0] == "grpc_server_handled_total"}
    assert len(handled) == 4
    assert handled == {
        k: v
        for k, v in samples.items()
        if k[0] == "grpc_server_handled_total"
        and not dict(k[1])["grpc_type"].endswith("SERVER_STREAMING")
        and dict(k[1])["grpc_type"] != "BIDI_STREAMING"
    }


def test_metrics_port_of_the_serve_command() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    command = [sys.executable, "-m", "puregrpc", "serve", "puregrpc.demo:register", "--port", "0"]
    command += ["--metrics-port", str(metrics_port)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 30
        assert process.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            if " serving " in line and " on " in line:
                port = int(line.rsplit(":", 1)[1].split()[0])
        assert port is not None
        from puregrpc.demo import _proto as pb

        with grpc.insecure_channel(f"localhost:{port}") as ch:
            hello = ch.unary_unary(
                "/puregrpc.demo.Greeter/SayHello",
                request_serializer=pb.HelloRequest.SerializeToString,
                response_deserializer=pb.HelloReply.FromString,
            )
            assert hello(pb.HelloRequest(name="m"), timeout=TIMEOUT).message
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=TIMEOUT) as response:
            text = response.read().decode()
        line = (
            'grpc_server_handled_total{grpc_code="OK",grpc_method="SayHello",'
            'grpc_service="puregrpc.demo.Greeter",grpc_type="UNARY"} 1.0'
        )
        assert line in text
    finally:
        process.terminate()
        process.wait(TIMEOUT)


# --- stats ---------------------------------------------------------------------------------------


def test_server_stats() -> None:
    release = threading.Event()
    entered = threading.Event()

    def block(request: bytes, context: Any) -> bytes:
        entered.set()
        release.wait(TIMEOUT)
        return b"done"

    calls = Recorder()
    blocking = grpc.method_handlers_generic_handler("obs.Block", {"Block": grpc.unary_unary_rpc_method_handler(block)})
    handlers = [*_handlers(calls), blocking]
    pool = ThreadPoolExecutor(8)
    server = puregrpc.server(pool, handlers=handlers)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        assert server.stats().rpcs_started == 0
        exercise(port)
        with grpc.insecure_channel(f"localhost:{port}") as ch:
            with pytest.raises(grpc.RpcError):
                ch.unary_unary("/obs.Nope/Nope")(b"", timeout=TIMEOUT)
            future = ch.unary_unary("/obs.Block/Block").future(b"", timeout=TIMEOUT)
            assert entered.wait(TIMEOUT)
            # Read from another thread while the I/O thread serves.
            box: List[Any] = []
            reader = threading.Thread(target=lambda: box.append(server.stats()))
            reader.start()
            reader.join()
            during = box[0]
            assert during.rpcs_in_flight == 1
            assert during.connections == 1
            release.set()
            assert future.result() == b"done"
        deadline = time.monotonic() + TIMEOUT
        while server.stats().connections and time.monotonic() < deadline:
            time.sleep(0.01)
        after = server.stats()
    finally:
        server.stop(0)
        pool.shutdown(wait=False)
    assert after.rpcs_started == 8
    assert after.rpcs_in_flight == 0
    assert after.rpcs_finished == {"OK": 5, "NOT_FOUND": 1, "UNKNOWN": 1, "UNIMPLEMENTED": 1}
    # (grpcio's channels in one process may share a connection: 1 or 2 were made.)
    assert after.connections == 0 and after.connections_total in (1, 2)
    assert after.bytes_received > 0 and after.bytes_sent > 0


# --- grpcio's type checks ------------------------------------------------------------------------


def test_isinstance_checks_written_for_grpcio() -> None:
    seen: Dict[str, bool] = {}

    def handler(request: bytes, context: Any) -> bytes:
        seen["context"] = isinstance(context, grpc.ServicerContext)
        return b""

    class Interceptor(grpc.ServerInterceptor):
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            seen["details"] = isinstance(details, grpc.HandlerCallDetails)
            handler = continuation(details)
            seen["handler"] = isinstance(handler, grpc.RpcMethodHandler)
            return handler

    pool = ThreadPoolExecutor(2)
    generic = puregrpc.method_handlers_generic_handler("t.S", {"M": puregrpc.unary_unary_rpc_method_handler(handler)})
    server = puregrpc.server(pool, handlers=[generic], interceptors=[Interceptor()])
    seen["server"] = isinstance(server, grpc.Server)
    seen["generic"] = isinstance(generic, grpc.GenericRpcHandler)
    port = server.add_insecure_port("localhost:0")
    server.start()
    try:
        with grpc.insecure_channel(f"localhost:{port}") as ch:
            ch.unary_unary("/t.S/M")(b"", timeout=TIMEOUT)
    finally:
        server.stop(0)
        pool.shutdown(wait=False)
    assert seen == dict.fromkeys(("server", "generic", "details", "handler", "context"), True)
