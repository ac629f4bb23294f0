"""In-process speed of several configurations of one model on the same pairs, taking turns (`bench backends`,
`bench qwen3`)."""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from ...config import Settings
from ...engine.budget import BatchBudget
from ...models.base import Scorer
from ...evaluation.inprocess import first_windows, load_batched, score_benchmark, score_topic
from ...evaluation.trec import Benchmark, Topic, evaluate
from .output import console
from .results import BackendResult


class BackendConfig(BaseModel):
    """One runtime and precision to measure."""

    name: str = Field(description="Label in the report, e.g. onnx-int8.")
    backend: str = Field(description="RERANK_BACKEND value.")
    quantize: str = Field(description="RERANK_QUANTIZE value.")
    prefix_reuse: bool = Field(True, description="RERANK_QWEN3_PREFIX_REUSE value (Qwen3 models only).")


@dataclass
class _Loaded:
    """One configuration's scorer, ready to time."""

    config: BackendConfig
    """Which configuration."""
    scorer: Scorer
    """The loaded model."""
    budget: BatchBudget
    """Batching as the engine would batch on the scorer's device."""
    load_s: float
    """Seconds the load took."""


def _load(config: BackendConfig, model_name: str, cache_dir: Path, warm_up: Topic) -> _Loaded:
    settings = Settings(model_name=model_name, backend=config.backend, quantize=config.quantize, cache_dir=cache_dir,
                        qwen3_prefix_reuse=config.prefix_reuse)
    started = time.perf_counter()
    scorer, budget = load_batched(settings)
    load_s = time.perf_counter() - started
    score_topic(scorer, warm_up.query, [c.text for c in warm_up.candidates[:8]], budget)  # one-off costs, not timed
    return _Loaded(config, scorer, budget, load_s)


def measure(configs: Sequence[BackendConfig], model_name: str, label: str, benchmark: Benchmark, cache_dir: Path,
            passes: int, judge: bool) -> list[BackendResult]:
    """Loads the model in every configuration, then times `passes` passes over `benchmark`, taking turns.

    Taking turns spreads the machine's drift over all configurations alike; each one's figure is its
    median pass. With `judge`, NDCG@10 of the scores (the same on every pass) is reported too.
    """
    loaded = [_load(config, model_name, cache_dir, benchmark.topics[0]) for config in configs]
    seconds: dict[str, list[float]] = {config.name: [] for config in configs}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for _ in range(passes):
        for backend in loaded:
            started = time.perf_counter()
            scores[backend.config.name] = score_benchmark(backend.scorer, benchmark, backend.budget)
            seconds[backend.config.name].append(time.perf_counter() - started)
    results = [_result(backend, label, benchmark, seconds[backend.config.name],
                       evaluate(benchmark, scores[backend.config.name]).ndcg10 if judge else None)
               for backend in loaded]
    for backend in loaded:
        backend.scorer.close()
    del loaded
    gc.collect()
    return results


def _result(backend: _Loaded, label: str, benchmark: Benchmark, seconds: list[float], ndcg10: float | None
            ) -> BackendResult:
    tokens = [len(pair.input_ids) for topic in benchmark.topics
              for pair in first_windows(backend.scorer, topic.query, [c.text for c in topic.candidates])]
    rates = [len(tokens) / s for s in seconds]
    median = float(np.median(seconds))
    console.log(f"{label} {backend.config.name}: {len(tokens) / median:.1f} pairs/s "
                f"(passes {', '.join(f'{rate:.1f}' for rate in rates)}; load {backend.load_s:.1f} s)")
    return BackendResult(
        backend=backend.config.name,
        model=label,
        pairs=len(tokens),
        mean_tokens=round(sum(tokens) / len(tokens), 1),
        seconds=round(median, 3),
        pairs_per_s=round(len(tokens) / median, 2),
        passes_pairs_per_s=[round(rate, 2) for rate in rates],
        load_s=round(backend.load_s, 3),
        details=dict(backend.scorer.info.details),
        ndcg10=round(ndcg10, 4) if ndcg10 is not None else None,
    )
