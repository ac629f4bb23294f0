"""Prometheus metrics of one app instance, in a registry of its own (tests run several apps per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


class Metrics:
    """Every metric the sidecar exports; `/metrics` renders `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "rerank_requests", "HTTP requests by route and status.", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "rerank_request_latency_seconds", "HTTP request latency.", ["route"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_depth = Gauge("rerank_queue_depth_pairs", "Pairs waiting to be scored.", registry=self.registry)
        self.batch_pairs = Histogram(
            "rerank_batch_pairs", "Pairs per forward pass.", buckets=_SIZE_BUCKETS, registry=self.registry
        )
        self.batch_tokens = Histogram(
            "rerank_batch_padded_tokens", "Padded tokens (longest x pairs) per forward pass.",
            buckets=_TOKEN_BUCKETS, registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "rerank_batch_seconds", "Seconds the model spent on one forward pass.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_requests = Histogram(
            "rerank_batch_requests", "Distinct requests whose pairs share one forward pass.",
            buckets=_SIZE_BUCKETS, registry=self.registry,
        )
        self.pairs_scored = Counter("rerank_pairs_scored", "Pairs the model scored.", registry=self.registry)
        self.pairs_dropped = Counter(
            "rerank_pairs_dropped", "Queued pairs dropped unscored (client gone or deadline passed).",
            registry=self.registry,
        )
        self.cache_hits = Counter("rerank_cache_hits", "Pairs answered from the score cache.", registry=self.registry)
        self.cache_misses = Counter("rerank_cache_misses", "Pairs the score cache did not hold.", registry=self.registry)
        self.model_load_seconds = Gauge(
            "rerank_model_load_seconds", "Seconds the model took to load.", registry=self.registry
        )
        self.model_loads = Counter("rerank_model_loads", "Times the model was loaded.", registry=self.registry)
        self.model_loaded = Gauge("rerank_model_loaded", "1 once the model is loaded.", registry=self.registry)
