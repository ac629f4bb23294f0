"""Scoring a benchmark in-process, without HTTP, batched as the engine batches: the reference the sidecar's
answers are compared to, the benchmarks' in-process figures, and what `calibrate` fits on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.progress import Progress

from ..config import Settings
from ..engine.budget import BatchBudget
from ..models.base import EncodedPair, Scorer
from .trec import Benchmark


def load_batched(settings: Settings) -> tuple[Scorer, BatchBudget]:
    """The scorer `settings` name, loaded offline in this process, and the batch budget the engine gives it."""
    from ..models.registry import load_scorer  # torch: only when something is scored
    from ..models.resolve import force_offline

    force_offline()
    scorer = load_scorer(settings)
    return scorer, BatchBudget.for_scorer(settings, scorer.info)


def first_windows(scorer: Scorer, query: str, documents: list[str]) -> list[EncodedPair]:
    """Each document's first window (truncate mode): one pair per document."""
    return [document.windows[0] for document in scorer.encode(query, documents, None, "truncate", 1)]


def planned_batches(pairs: Sequence[EncodedPair], budget: BatchBudget) -> list[list[int]]:
    """Indexes of `pairs` in the batches the engine's planner cuts them into."""
    return budget.plan_pairs(pairs)


def score_topic(scorer: Scorer, query: str, documents: list[str], budget: BatchBudget) -> np.ndarray:
    """Raw scores of one query's documents, batched by length within `budget` (truncate mode)."""
    pairs = first_windows(scorer, query, documents)
    raw = np.zeros(len(pairs), dtype=np.float64)
    for batch in planned_batches(pairs, budget):
        raw[batch] = scorer.score_batch([pairs[i] for i in batch])
    return raw


def score_benchmark(scorer: Scorer, benchmark: Benchmark, budget: BatchBudget) -> dict[str, np.ndarray]:
    """Raw scores of every topic's candidates, with a progress bar."""
    scores: dict[str, np.ndarray] = {}
    with Progress(transient=True) as progress:
        task = progress.add_task("scoring in-process", total=len(benchmark.topics))
        for topic in benchmark.topics:
            scores[topic.qid] = score_topic(scorer, topic.query, [c.text for c in topic.candidates], budget)
            progress.advance(task)
    return scores


def score_and_relevance(benchmark: Benchmark, **overrides: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw scores and relevance of every topic from the configured model loaded in this process (the settings a
    sidecar would use, less any `overrides`: setting field -> value, e.g. quantize="none")."""
    settings = Settings(**overrides)
    scorer, budget = load_batched(settings)
    try:
        raw = score_benchmark(scorer, benchmark, budget)
        return raw, {qid: scorer.relevance(scores) for qid, scores in raw.items()}
    finally:
        scorer.close()


def score_in_process(benchmark: Benchmark, **overrides: str) -> dict[str, np.ndarray]:
    """Raw scores of `score_and_relevance`."""
    return score_and_relevance(benchmark, **overrides)[0]
