"""Prometheus metrics (`embedsvc_*` series with bounded labels: service, method, code, model, collection; never ids,
texts or keys), served on their own port. Call counts, latencies and calls in flight are counted by the gateway
interceptor; models, batchers and collections are read at scrape time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from embedsvc.core.registry import ModelRegistry
from embedsvc.errors import EmbedsvcError
from embedsvc.index.backend import Stores
from embedsvc.stats import Histogram as Counts

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class Metrics:
    """The server's registry (its own, so that servers in one process never share series) and its call metrics."""

    def __init__(self, registry: ModelRegistry, store: Stores) -> None:
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "embedsvc_requests", "Calls answered, by outcome.", ["service", "method", "code"], registry=self.registry
        )
        self.latency = Histogram(
            "embedsvc_request_duration_seconds",
            "Time from a call's arrival to its answer.",
            ["service", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "embedsvc_requests_in_flight", "Calls being answered now.", ["service", "method"], registry=self.registry
        )
        self.registry.register(_ServerCollector(registry, store))
        self._http: Any = None

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics endpoint; returns its port."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _histogram(name: str, documentation: str, label: str, rows: list[tuple[str, Counts | None]]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=[label])
    for value, counts in rows:
        if counts is not None:
            buckets, total = counts.snapshot()
            family.add_metric([value], buckets, total)
    return family


def _gauge(name: str, documentation: str, labels: list[str], rows: list[tuple[list[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for values, value in rows:
        family.add_metric(values, value)
    return family


class _ServerCollector(Collector):
    """Series read from the models and collections at each scrape."""

    def __init__(self, registry: ModelRegistry, store: Stores) -> None:
        self._models = registry
        self._store = store

    def collect(self) -> Iterator[Metric]:
        infos = self._models.infos()
        yield _gauge(
            "embedsvc_model_info",
            "Hosted models (value 1), with their kind, version, device and state.",
            ["model", "kind", "version", "device", "state"],
            [([i.name, i.kind, i.version, i.device, i.state.value], 1.0) for i in infos],
        )
        batchers = self._models.batchers()
        yield _histogram(
            "embedsvc_batch_texts",
            "Texts per batch a text encoder ran.",
            "model",
            [(name, b.stats.sizes) for name, b in batchers.items()],
        )
        yield _gauge(
            "embedsvc_batch_queue_texts",
            "Texts waiting for a text encoder.",
            ["model"],
            [([name], float(b.queued)) for name, b in batchers.items()],
        )
        collections = []
        for name in self._store.names():
            with contextlib.suppress(EmbedsvcError):  # deleted between the two calls
                collections.append((name, self._store.get(name)))
        for metric, documentation, read in _COLLECTION_GAUGES:
            yield _gauge(metric, documentation, ["collection"], [([n], float(read(c))) for n, c in collections])
        yield _histogram(
            "embedsvc_collection_fsync_seconds",
            "Durations of the log's group-commit fsyncs.",
            "collection",
            [(n, c.fsync_seconds) for n, c in collections],
        )
        yield _histogram(
            "embedsvc_collection_checkpoint_seconds",
            "Durations of checkpoints.",
            "collection",
            [(n, c.checkpoint_seconds) for n, c in collections],
        )
        failures = CounterMetricFamily(
            "embedsvc_collection_checkpoint_failures",
            "Checkpoints that failed (writes stay durable in the log; the checkpoint is retried).",
            labels=["collection"],
        )
        for n, c in collections:
            failures.add_metric([n], float(c.checkpoint_failures))
        yield failures


_COLLECTION_GAUGES: list[tuple[str, str, Callable[[Any], float]]] = [
    ("embedsvc_collection_items", "Live items of a collection.", lambda c: c.count),
    ("embedsvc_collection_tombstones", "Replaced or deleted entries not yet compacted.", lambda c: c.tombstones),
    ("embedsvc_collection_log_bytes", "Bytes in the collection's write-ahead log.", lambda c: c.log_bytes),
]
