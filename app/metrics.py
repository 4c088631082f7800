"""Prometheus metrics, one registry per app instance (tests build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fashion_requests", "HTTP requests by route and status code", ["route", "code"], registry=self.registry
        )
        self.stage_seconds = Histogram(
            "fashion_stage_seconds", "Time per pipeline stage", ["stage"], buckets=STAGE_BUCKETS, registry=self.registry
        )
        self.batch_size = Histogram(
            "fashion_batch_size", "Photos per model forward", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.queue_depth = Gauge("fashion_queue_depth", "Photos waiting for the model", registry=self.registry)
        self.cache = Counter("fashion_cache", "Response cache lookups", ["result"], registry=self.registry)
        self.bundle = Gauge(
            "fashion_bundle_info", "The bundle being served (value 1)", ["version"], registry=self.registry
        )
        self.bundle_swaps = Counter("fashion_bundle_swaps", "Bundle hot swaps", registry=self.registry)

    def set_bundle(self, version: str) -> None:
        self.bundle.clear()
        self.bundle.labels(version=version).set(1)
