"""The one place scores become best-first results, for every rerank route and the client's positional fallback.

Pydantic and the standard library only, so the client imports it without torch, numpy or FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from .compat_schemas import CompatRerankResult, DocumentObject, echoed_document
from .schemas import RerankGroupResult, RerankResult

Result = TypeVar("Result")


def best_first(scores: Sequence[float], top_n: int | None) -> list[int]:
    """Indices by descending score (ties keep input order: Python's sort is stable, reversed too), cut to top_n."""
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    return order if top_n is None else order[:top_n]


def ranked_results(scores: Sequence[float], top_n: int | None, result: Callable[[int, float], Result]) -> list[Result]:
    """`result(index, score)` for each document, best first, cut to top_n: each route supplies its own result type."""
    return [result(index, scores[index]) for index in best_first(scores, top_n)]


def group_result(
    scores: list[float], documents: Sequence[str], top_n: int | None, return_documents: bool, truncated: list[int]
) -> RerankGroupResult:
    """One query's answer in the native shape: scores in input order, results best first with the options applied."""
    return RerankGroupResult(
        scores=scores,
        results=ranked_results(
            scores,
            top_n,
            lambda index, score: RerankResult(
                index=index, relevance_score=score, document=documents[index] if return_documents else None
            ),
        ),
        truncated=truncated,
    )


def compat_results(
    scores: list[float], documents: Sequence[str | DocumentObject], top_n: int | None, return_documents: bool
) -> list[CompatRerankResult]:
    """Cohere/Jina's results: best first, each document echoed as sent when asked."""
    return ranked_results(
        scores,
        top_n,
        lambda index, score: CompatRerankResult(
            index=index,
            relevance_score=score,
            document=echoed_document(documents[index]) if return_documents else None,
        ),
    )
