"""Prometheus metrics for a puregrpc server, with the names dashboards already use.

The metric names and labels are those of go-grpc-prometheus and py-grpc-prometheus
(``grpc_type`` values as py-grpc-prometheus: UNARY, CLIENT_STREAMING, SERVER_STREAMING,
BIDI_STREAMING)::

    grpc_server_started_total{grpc_type, grpc_service, grpc_method}
    grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}
    grpc_server_msg_received_total{grpc_type, grpc_service, grpc_method}
    grpc_server_msg_sent_total{grpc_type, grpc_service, grpc_method}
    grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method}  (histogram)

Use::

    from puregrpc.prometheus import enable_prometheus
    enable_prometheus(server)                 # prometheus_client's default registry
    prometheus_client.start_http_server(9100)

or ``puregrpc serve ... --metrics-port 9100``. Counting happens on the server's I/O
thread in plain integers (a few per RPC, under one uncontended lock); the metric
families are built only when Prometheus scrapes. Needs the ``prometheus-client``
package (an optional dependency), imported only here.

Only RPCs that find a handler are counted (an unknown method never starts), as with
the interceptor-based libraries. Messages are counted for every RPC type (the
interceptors count them only for streams). Several servers may be counted by one
``PrometheusMetrics``; its numbers are their sums.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from ._stats import RpcRecord

# Prometheus' default buckets (seconds), as go-grpc-prometheus uses them.
DEFAULT_BUCKETS: Tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_Key = Tuple[str, str, str]  # grpc_type, grpc_service, grpc_method


def _split(method: str) -> Tuple[str, str]:
    """ "/pkg.Service/Method" -> ("pkg.Service", "Method")."""
    service, _, name = method[1:].rpartition("/")
    return service, name


class _Method:
    """Counts of one (type, service, method)."""

    __slots__ = ("buckets", "count", "handled", "received", "sent", "started", "sum")

    def __init__(self, n_buckets: int) -> None:
        self.started = 0
        self.handled: Dict[str, int] = {}
        self.received = 0
        self.sent = 0
        self.buckets = [0] * n_buckets  # non-cumulative; the last is +Inf
        self.count = 0
        self.sum = 0.0


class PrometheusMetrics(Collector):
    """An RPC observer of puregrpc servers and a Prometheus collector of what it saw."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or any(b != b for b in bounds):
            raise ValueError("buckets must be a non-empty sequence of numbers")
        self._bounds: List[float] = bounds
        self._methods: Dict[_Key, _Method] = {}
        self._names: Dict[Tuple[str, str], _Key] = {}  # (method path, type) -> key
        self._lock = threading.Lock()

    # -- RpcObserver (called on a server's I/O thread) ----------------------------
    def _entry(self, method: str, grpc_type: str) -> _Method:
        key = self._names.get((method, grpc_type))
        if key is None:
            service, name = _split(method)
            key = (grpc_type, service, name)
            self._names[(method, grpc_type)] = key
        entry = self._methods.get(key)
        if entry is None:
            entry = self._methods[key] = _Method(len(self._bounds) + 1)
        return entry

    def rpc_started(self, method: str, grpc_type: str) -> None:
        with self._lock:
            self._entry(method, grpc_type).started += 1

    def rpc_finished(self, record: RpcRecord) -> None:
        code = record.code.name
        slot = bisect.bisect_left(self._bounds, record.seconds)
        with self._lock:
            entry = self._entry(record.method, record.grpc_type)
            entry.handled[code] = entry.handled.get(code, 0) + 1
            entry.received += record.messages_received
            entry.sent += record.messages_sent
            entry.buckets[slot] += 1
            entry.count += 1
            entry.sum += record.seconds

    # -- Collector (called by prometheus_client when scraped) ---------------------
    def _copy(self) -> List[Tuple[_Key, int, Dict[str, int], int, int, List[int], float]]:
        with self._lock:
            return [
                (key, m.started, dict(m.handled), m.received, m.sent, list(m.buckets), m.sum)
                for key, m in self._methods.items()
            ]

    def collect(self) -> Iterable[Any]:
        labels = ["grpc_type", "grpc_service", "grpc_method"]
        started = CounterMetricFamily(
            "grpc_server_started", "Total number of RPCs started on the server.", labels=labels
        )
        handled = CounterMetricFamily(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=[*labels, "grpc_code"],
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received", "Total number of RPC stream messages received on the server.", labels=labels
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent", "Total number of gRPC stream messages sent by the server.", labels=labels
        )
        seconds = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            labels=labels,
        )
        for key, n_started, n_handled, n_received, n_sent, buckets, total in self._copy():
            values = list(key)
            started.add_metric(values, n_started)
            for code, count in sorted(n_handled.items()):
                handled.add_metric([*values, code], count)
            received.add_metric(values, n_received)
            sent.add_metric(values, n_sent)
            cumulative = 0
            points = []
            for bound, count in zip([*self._bounds, float("inf")], buckets):
                cumulative += count
                points.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            seconds.add_metric(values, points, total)
        yield from (started, handled, received, sent, seconds)

    def describe(self) -> Iterator[Any]:
        return iter(())  # unchecked collector: names are only known once scraped


def enable_prometheus(
    server: Any, registry: Optional[Any] = REGISTRY, metrics: Optional[PrometheusMetrics] = None
) -> PrometheusMetrics:
    """Count ``server``'s RPCs and register the metrics with ``registry`` (prometheus_client's
    default registry; ``None`` registers nothing). Pass ``metrics`` to count several
    servers in one set of metrics (it is then registered by its first call only)."""
    if metrics is None:
        metrics = PrometheusMetrics()
        if registry is not None:
            registry.register(metrics)
    server.add_rpc_observer(metrics)
    return metrics


__all__ = ["DEFAULT_BUCKETS", "PrometheusMetrics", "enable_prometheus"]
