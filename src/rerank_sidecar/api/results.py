"""The one place scores become best-first results, for every rerank route."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

Result = TypeVar("Result")


def best_first(scores: np.ndarray, top_n: int | None) -> list[int]:
    """Indices by descending score (ties keep input order), cut to top_n."""
    order = np.argsort(-scores, kind="stable").tolist()
    return order if top_n is None else order[:top_n]


def ranked_results(
    scores: np.ndarray, top_n: int | None, result: Callable[[int, float], Result]
) -> list[Result]:
    """`result(index, score)` for each document, best first, cut to top_n: each route supplies its own result type."""
    return [result(index, float(scores[index])) for index in best_first(scores, top_n)]
