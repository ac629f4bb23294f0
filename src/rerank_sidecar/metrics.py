"""Prometheus metrics of one app instance, in a registry of its own (tests run several apps per process).

HTTP metrics are labelled by route and status; everything a model's engine records carries a
`model` label (its name in RERANK_MODELS, or the served id of the one model).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_MODEL = ["model"]


@dataclass(frozen=True, slots=True)
class ModelMetrics:
    """One model's series of every per-model metric: what its engine and scheduler record into."""

    queue_depth: Gauge
    """Pairs waiting to be scored."""
    batch_pairs: Histogram
    """Pairs per forward pass."""
    batch_tokens: Histogram
    """Padded tokens per forward pass."""
    batch_seconds: Histogram
    """Seconds per forward pass."""
    batch_requests: Histogram
    """Requests sharing one forward pass."""
    pairs_scored: Counter
    """Pairs scored."""
    pairs_dropped: Counter
    """Queued pairs dropped unscored."""
    cache_hits: Counter
    """Pairs answered from the score cache."""
    cache_misses: Counter
    """Pairs the score cache did not hold."""
    model_load_seconds: Gauge
    """Seconds the last load took."""
    model_loads: Counter
    """Times the model was loaded."""
    model_unloads: Counter
    """Times the model was unloaded (idle past RERANK_KEEP_ALIVE_S, or evicted)."""
    model_loaded: Gauge
    """1 while the model is loaded."""


class Metrics:
    """Every metric the sidecar exports; `/metrics` renders `registry`."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("rerank_requests", "HTTP requests by route and status.", ["route", "status"],
                                registry=registry)
        self.latency = Histogram("rerank_request_latency_seconds", "HTTP request latency.", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self._per_model = ModelMetrics(
            queue_depth=Gauge("rerank_queue_depth_pairs", "Pairs waiting to be scored.", _MODEL, registry=registry),
            batch_pairs=Histogram("rerank_batch_pairs", "Pairs per forward pass.", _MODEL,
                                  buckets=_SIZE_BUCKETS, registry=registry),
            batch_tokens=Histogram("rerank_batch_padded_tokens", "Padded tokens (longest x pairs) per forward pass.",
                                   _MODEL, buckets=_TOKEN_BUCKETS, registry=registry),
            batch_seconds=Histogram("rerank_batch_seconds", "Seconds the model spent on one forward pass.", _MODEL,
                                    buckets=_LATENCY_BUCKETS, registry=registry),
            batch_requests=Histogram("rerank_batch_requests", "Distinct requests whose pairs share one forward pass.",
                                     _MODEL, buckets=_SIZE_BUCKETS, registry=registry),
            pairs_scored=Counter("rerank_pairs_scored", "Pairs the model scored.", _MODEL, registry=registry),
            pairs_dropped=Counter("rerank_pairs_dropped",
                                  "Queued pairs dropped unscored (client gone or deadline passed).", _MODEL,
                                  registry=registry),
            cache_hits=Counter("rerank_cache_hits", "Pairs answered from the score cache.", _MODEL, registry=registry),
            cache_misses=Counter("rerank_cache_misses", "Pairs the score cache did not hold.", _MODEL,
                                 registry=registry),
            model_load_seconds=Gauge("rerank_model_load_seconds", "Seconds the model's last load took.", _MODEL,
                                     registry=registry),
            model_loads=Counter("rerank_model_loads", "Times the model was loaded.", _MODEL, registry=registry),
            model_unloads=Counter("rerank_model_unloads", "Times the model was unloaded (idle or evicted).", _MODEL,
                                  registry=registry),
            model_loaded=Gauge("rerank_model_loaded", "1 while the model is loaded.", _MODEL, registry=registry),
        )

    def for_model(self, name: str) -> ModelMetrics:
        """The series of model `name`, created at zero so /metrics lists every served model from the start."""
        families = {field: getattr(self._per_model, field) for field in ModelMetrics.__slots__}
        return ModelMetrics(**{field: family.labels(model=name) for field, family in families.items()})
