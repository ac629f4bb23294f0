"""Scoring a benchmark in-process, without HTTP: the reference the sidecar's answers are compared to."""

from __future__ import annotations

import numpy as np
from rich.progress import Progress

from ..engine.budget import BatchBudget
from ..models.base import Scorer
from .trec import Benchmark


def score_topic(scorer: Scorer, query: str, documents: list[str], budget: BatchBudget) -> np.ndarray:
    """Raw scores of one query's documents, batched by length within `budget` (truncate mode)."""
    pairs = [doc.windows[0] for doc in scorer.encode(query, documents, None, "truncate", 1)]
    raw = np.zeros(len(pairs), dtype=np.float64)
    for chunk in budget.plan_pairs(pairs):
        raw[chunk] = scorer.score_batch([pairs[i] for i in chunk])
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
