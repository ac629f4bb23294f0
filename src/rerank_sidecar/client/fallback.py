"""The positional fallback: what consumers did before the sidecar (1 / (1 + rank), input order kept), flagged."""

from __future__ import annotations

from ..api.compat_schemas import BilledUnits, CompatMeta, CompatRerankRequest, CompatUsage
from ..api.results import compat_results, group_result
from ..api.schemas import RerankBatchRequest, RerankRequest
from .replies import CompatRerankReply, RerankBatchReply, RerankReply

POSITIONAL_MODEL_ID = "fallback:positional"


def positional_scores(count: int) -> list[float]:
    """1 / (1 + rank) for ranks 0 .. count-1: the order the caller gave, kept."""
    return [1.0 / (1 + rank) for rank in range(count)]


def positional_reply(request: RerankRequest) -> RerankReply:
    """What consumers did before the sidecar, flagged as fallback."""
    group = group_result(positional_scores(len(request.documents)), request.documents, request.top_n,
                         request.return_documents, truncated=[])
    return RerankReply(model=POSITIONAL_MODEL_ID, revision="", scores=group.scores, results=group.results,
                       truncated=group.truncated, latency_ms=0.0, fallback=True)


def positional_batch_reply(request: RerankBatchRequest) -> RerankBatchReply:
    """Positional scores for every group, flagged as fallback."""
    groups = [
        group_result(positional_scores(len(group.documents)), group.documents, request.top_n,
                     request.return_documents, truncated=[])
        for group in request.groups
    ]
    return RerankBatchReply(model=POSITIONAL_MODEL_ID, revision="", groups=groups, latency_ms=0.0, fallback=True)


def positional_compat_reply(request: CompatRerankRequest) -> CompatRerankReply:
    """Positional scores in the Cohere/Jina shape, flagged as fallback; nothing was billed or read."""
    return CompatRerankReply(
        id="",
        model=POSITIONAL_MODEL_ID,
        results=compat_results(
            positional_scores(len(request.documents)), request.documents, request.top_n, request.return_documents
        ),
        meta=CompatMeta(billed_units=BilledUnits(search_units=0)),
        usage=CompatUsage(prompt_tokens=0, total_tokens=0),
        fallback=True,
    )
