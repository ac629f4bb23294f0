"""The positional fallback: what consumers did before the sidecar (1 / (1 + rank), input order kept), flagged."""

from __future__ import annotations

from collections.abc import Sequence

from ..api.compat_schemas import BilledUnits, CompatMeta, CompatRerankRequest, CompatRerankResult, CompatUsage, echoed_document
from ..api.schemas import RerankBatchRequest, RerankGroupResult, RerankRequest, RerankResult
from .replies import CompatRerankReply, RerankBatchReply, RerankReply

POSITIONAL_MODEL_ID = "fallback:positional"


def positional_scores(count: int) -> list[float]:
    """1 / (1 + rank) for ranks 0 .. count-1: the order the caller gave, kept."""
    return [1.0 / (1 + rank) for rank in range(count)]


def _positional_group(documents: Sequence[str], top_n: int | None, return_documents: bool) -> RerankGroupResult:
    scores = positional_scores(len(documents))
    return RerankGroupResult(
        scores=scores,
        results=[
            RerankResult(
                index=index, relevance_score=scores[index], document=documents[index] if return_documents else None
            )
            for index in range(len(documents))[:top_n]
        ],
        truncated=[],
    )


def positional_reply(request: RerankRequest) -> RerankReply:
    """What consumers did before the sidecar, flagged as fallback."""
    group = _positional_group(request.documents, request.top_n, request.return_documents)
    return RerankReply(model=POSITIONAL_MODEL_ID, revision="", scores=group.scores, results=group.results,
                       truncated=group.truncated, latency_ms=0.0, fallback=True)


def positional_batch_reply(request: RerankBatchRequest) -> RerankBatchReply:
    """Positional scores for every group, flagged as fallback."""
    groups = [_positional_group(group.documents, request.top_n, request.return_documents) for group in request.groups]
    return RerankBatchReply(model=POSITIONAL_MODEL_ID, revision="", groups=groups, latency_ms=0.0, fallback=True)


def positional_compat_reply(request: CompatRerankRequest) -> CompatRerankReply:
    """Positional scores in the Cohere/Jina shape, flagged as fallback; nothing was billed or read."""
    scores = positional_scores(len(request.documents))
    return CompatRerankReply(
        id="",
        model=POSITIONAL_MODEL_ID,
        results=[
            CompatRerankResult(
                index=index,
                relevance_score=scores[index],
                document=echoed_document(request.documents[index]) if request.return_documents else None,
            )
            for index in range(len(request.documents))[:request.top_n]
        ],
        meta=CompatMeta(billed_units=BilledUnits(search_units=0)),
        usage=CompatUsage(prompt_tokens=0, total_tokens=0),
        fallback=True,
    )
