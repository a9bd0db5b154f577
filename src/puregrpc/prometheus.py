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
thread in plain integers (a few per RPC, no lock: only that thread writes them); the metric
families are built only when Prometheus scrapes. Needs the ``prometheus-client``
package (an optional dependency), imported only here.

Only RPCs that find a handler are counted (an unknown method never starts), as with
the interceptor-based libraries. Messages are counted for every RPC type (the
interceptors count them only for streams). Several servers may be counted by one
``PrometheusMetrics``; its numbers are their sums.

Several processes (``puregrpc serve --workers N``): each worker writes its counts to a
file in a shared folder (``SnapshotWriter``, once a second and when it stops), and the
supervisor serves their sums (``FolderCollector``). The files of workers that have
exited are kept, so counters never go backwards when a worker is restarted.
"""

from __future__ import annotations

import bisect
import json
import os
import threading
import time
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from ._loop import LoopIO, io_thread
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

    __slots__ = ("buckets", "handled", "received", "sent", "started", "sum")

    def __init__(self, n_buckets: int) -> None:
        self.started = 0
        self.handled: Dict[str, int] = {}
        self.received = 0
        self.sent = 0
        self.buckets = [0] * n_buckets  # non-cumulative; the last is +Inf
        self.sum = 0.0


class PrometheusMetrics(Collector):
    """An RPC observer of puregrpc servers and a Prometheus collector of what it saw."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or any(b != b for b in bounds):
            raise ValueError("buckets must be a non-empty sequence of numbers")
        self._bounds: List[float] = bounds
        # (method path, type) -> counts. Written by the I/O thread only (observers run
        # there), so counting takes no lock; readers copy it on that thread too (_copy).
        self._methods: Dict[Tuple[str, str], _Method] = {}
        self._io: Optional[LoopIO] = None  # the loop of the servers counted

    def _observe(self, server: Any) -> None:
        io = server._core.io
        if self._io is not None and self._io is not io:
            raise ValueError(
                "one PrometheusMetrics counts servers of one loop only (every puregrpc.server(), "
                "or one puregrpc.aio server): make one for each puregrpc.aio server"
            )
        self._io = io
        server.add_rpc_observer(self)

    # -- RpcObserver (called on the I/O thread) -----------------------------------
    def _new_entry(self, method: str, grpc_type: str) -> _Method:
        entry = self._methods[(method, grpc_type)] = _Method(len(self._bounds) + 1)
        return entry

    def rpc_started(self, method: str, grpc_type: str) -> None:
        entry = self._methods.get((method, grpc_type)) or self._new_entry(method, grpc_type)
        entry.started += 1

    def rpc_finished(self, record: RpcRecord) -> None:
        entry = self._methods.get((record.method, record.grpc_type)) or self._new_entry(record.method, record.grpc_type)
        handled = entry.handled
        code = record.code.name
        handled[code] = handled.get(code, 0) + 1
        entry.received += record.messages_received
        entry.sent += record.messages_sent
        entry.buckets[bisect.bisect_left(self._bounds, record.seconds)] += 1
        entry.sum += record.seconds

    # -- Collector (called by prometheus_client when scraped) ---------------------
    def _copy_here(self) -> List[_Row]:
        rows: List[_Row] = []
        for (method, kind), m in list(self._methods.items()):
            service, name = _split(method)
            rows.append(((kind, service, name), m.started, dict(m.handled), m.received, m.sent, list(m.buckets), m.sum))
        return rows

    def _copy(self) -> List[_Row]:
        """A consistent copy of the counts, made on the loop's thread that writes them."""
        io = self._io if self._io is not None else io_thread()  # added with add_rpc_observer()
        return io.call(self._copy_here, timeout=10.0)

    def snapshot(self) -> Dict[str, Any]:
        """What was counted, as JSON-able data (see ``FolderCollector``)."""
        return {"bounds": list(self._bounds), "rows": [[list(row[0]), *row[1:]] for row in self._copy()]}

    def collect(self) -> Iterable[Any]:
        return _families(self._bounds, self._copy())

    def describe(self) -> Iterator[Any]:
        return iter(())  # unchecked collector: names are only known once scraped


_Row = Tuple[_Key, int, Dict[str, int], int, int, List[int], float]


def _families(bounds: List[float], rows: List[_Row]) -> Iterable[Any]:
    """The metric families of ``rows`` (one process's counts, or the sum of many)."""
    labels = ["grpc_type", "grpc_service", "grpc_method"]
    started = CounterMetricFamily("grpc_server_started", "Total number of RPCs started on the server.", labels=labels)
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
    for key, n_started, n_handled, n_received, n_sent, buckets, total in rows:
        values = list(key)
        started.add_metric(values, n_started)
        for code, count in sorted(n_handled.items()):
            handled.add_metric([*values, code], count)
        received.add_metric(values, n_received)
        sent.add_metric(values, n_sent)
        cumulative = 0
        points = []
        for bound, count in zip([*bounds, float("inf")], buckets):
            cumulative += count
            points.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        seconds.add_metric(values, points, total)
    yield from (started, handled, received, sent, seconds)


class SnapshotWriter:
    """Writes ``metrics.snapshot()`` to ``folder/puregrpc-<pid>-<ns>.json`` every ``interval``
    seconds (atomically: write, then rename) on a daemon thread, and once more on ``stop()``."""

    def __init__(self, metrics: PrometheusMetrics, folder: str, interval: float = 1.0) -> None:
        self._metrics = metrics
        # pid and start time: a later process with a reused pid gets a file of its own
        self._path = os.path.join(folder, f"puregrpc-{os.getpid()}-{time.time_ns()}.json")
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="puregrpc-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            self.write()

    def write(self) -> None:
        temporary = self._path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(self._metrics.snapshot(), f)
        os.replace(temporary, self._path)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
        self.write()


class FolderCollector(Collector):
    """The sums of the snapshots in ``folder`` (one per process; see ``SnapshotWriter``)."""

    def __init__(self, folder: str) -> None:
        self._folder = folder

    def _load(self) -> Tuple[List[float], List[_Row]]:
        bounds: List[float] = list(DEFAULT_BUCKETS)
        merged: Dict[_Key, _Method] = {}
        for name in sorted(os.listdir(self._folder)):
            if not (name.startswith("puregrpc-") and name.endswith(".json")):
                continue
            try:
                with open(os.path.join(self._folder, name), encoding="utf-8") as f:
                    data = json.load(f)
            except (OSError, ValueError):
                continue  # being replaced, or unreadable: the next scrape sees it
            bounds = [float(b) for b in data["bounds"]]
            for key_list, started, handled, received, sent, buckets, total in data["rows"]:
                key = (str(key_list[0]), str(key_list[1]), str(key_list[2]))
                entry = merged.get(key)
                if entry is None:
                    entry = merged[key] = _Method(len(buckets))
                entry.started += int(started)
                for code, count in handled.items():
                    entry.handled[code] = entry.handled.get(code, 0) + int(count)
                entry.received += int(received)
                entry.sent += int(sent)
                entry.buckets = [a + int(b) for a, b in zip(entry.buckets, buckets)]
                entry.sum += float(total)
        rows = [(k, m.started, m.handled, m.received, m.sent, m.buckets, m.sum) for k, m in merged.items()]
        return bounds, rows

    def collect(self) -> Iterable[Any]:
        bounds, rows = self._load()
        return _families(bounds, rows)

    def describe(self) -> Iterator[Any]:
        return iter(())


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
    metrics._observe(server)
    return metrics


__all__ = ["DEFAULT_BUCKETS", "FolderCollector", "PrometheusMetrics", "SnapshotWriter", "enable_prometheus"]
