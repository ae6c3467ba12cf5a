"""The server's Prometheus metrics: requests, latency, errors, batches."""

from __future__ import annotations

import os

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

from .batching import BatchStats
from .drift import DriftCollector, LiveDrift

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.requests = Counter(
            "bundle_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "bundle_request_duration_seconds",
            "Time from request to response, by endpoint.",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.errors = Counter(
            "bundle_errors",
            "Requests answered with an error, by kind (schema, step, request, not_found, "
            "too_large, overloaded, not_ready, internal).",
            ["kind"],
            registry=registry,
        )
        self.batch_rows = Histogram(
            "bundle_batch_rows",
            "Rows per model call (after merging concurrent requests).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384),
            registry=registry,
        )
        self.batch_requests = Histogram(
            "bundle_batch_requests",
            "Requests merged into one model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "bundle_batch_duration_seconds",
            "Time of one merged predict (preprocessing, model, postprocessing).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=registry,
        )
        self.rows = Counter("bundle_rows", "Rows predicted.", registry=registry)
        self._drift: DriftCollector | None = None

    def watch_drift(self, live: LiveDrift) -> None:
        """Report the live drift window at each scrape (gauges per feature)."""
        self._drift = DriftCollector(live, per_process=bool(os.environ.get(MULTIPROC_ENV)))
        self.registry.register(self._drift)

    def batch(self, stats: BatchStats) -> None:
        self.batch_rows.observe(stats.rows)
        self.batch_requests.observe(stats.requests)
        self.batch_seconds.observe(stats.seconds)
        if not stats.failed:
            self.rows.inc(stats.rows)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            if self._drift is not None:  # this process's window: statistics do not sum
                registry.register(self._drift)
            return prometheus_client.generate_latest(registry)
        return prometheus_client.generate_latest(self.registry)
