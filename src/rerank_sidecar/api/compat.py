"""Cohere/Jina-compatible routes, so LangChain, LlamaIndex, LiteLLM, Haystack and the Cohere SDK work unchanged."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request

from ..config import Settings
from ..engine.engine import RerankJob
from .compat_schemas import (
    BilledUnits,
    CompatMeta,
    CompatRerankRequest,
    CompatRerankResponse,
    CompatRerankResult,
    CompatUsage,
    echoed_document,
)
from .dispatch import pick_engine, rerank_outcome
from .errors import ApiError
from .limits import check_limits
from .request_notes import note_request
from .results import ranked_results
from .schemas import ERROR_RESPONSES

# Cohere counts one search unit per query and started hundred documents.
DOCUMENTS_PER_SEARCH_UNIT = 100

router = APIRouter(tags=["Cohere/Jina compatible"])

_RESPONSES = {**ERROR_RESPONSES, 200: {"description": "Documents best first, with relevance in [0, 1]."}}


@router.post("/v1/rerank", response_model=CompatRerankResponse, response_model_exclude_none=True, responses=_RESPONSES)
async def rerank_v1(body: CompatRerankRequest, request: Request) -> CompatRerankResponse:
    """Cohere v1 / Jina rerank: string or object documents, `rank_fields`, `max_chunks_per_doc`."""
    return await _rerank(body, request)


@router.post("/v2/rerank", response_model=CompatRerankResponse, response_model_exclude_none=True, responses=_RESPONSES)
async def rerank_v2(body: CompatRerankRequest, request: Request) -> CompatRerankResponse:
    """Cohere v2 rerank: `max_tokens_per_doc` cuts each document; the same answer shape as v1."""
    return await _rerank(body, request)


async def _rerank(body: CompatRerankRequest, request: Request) -> CompatRerankResponse:
    engine = pick_engine(request, body.model)
    settings = engine.settings
    check_limits(settings, body.query, body.texts)
    _check_chunk_cap(settings, body.max_chunks_per_doc)
    note_request(request, body.query, body.texts, settings)
    job = RerankJob(
        query=body.query,
        documents=body.texts,
        # Asking for a chunk cap asks for chunking, as on Cohere v1, whatever RERANK_LONG_DOCS says.
        long_docs="chunk" if body.max_chunks_per_doc is not None else None,
        max_chunks=body.max_chunks_per_doc,
        max_document_tokens=body.max_tokens_per_doc,
    )
    outcome = await rerank_outcome(request, engine, job)
    return CompatRerankResponse(
        id=request.state.request_id,
        model=outcome.info.model,
        results=ranked_results(
            outcome.relevance,
            body.top_n,
            lambda index, score: CompatRerankResult(
                index=index,
                relevance_score=score,
                document=echoed_document(body.documents[index]) if body.return_documents else None,
            ),
        ),
        meta=CompatMeta(
            billed_units=BilledUnits(search_units=max(1, math.ceil(len(body.documents) / DOCUMENTS_PER_SEARCH_UNIT))),
            warnings=[_truncation_warning(outcome.truncated)] if outcome.truncated else None,
        ),
        usage=CompatUsage(prompt_tokens=outcome.tokens, total_tokens=outcome.tokens),
    )


def _check_chunk_cap(settings: Settings, max_chunks_per_doc: int | None) -> None:
    if max_chunks_per_doc is not None and max_chunks_per_doc > settings.max_chunks_per_doc:
        raise ApiError(
            422, "validation_error",
            f"max_chunks_per_doc: {max_chunks_per_doc} exceeds the limit of {settings.max_chunks_per_doc} "
            "(RERANK_MAX_CHUNKS_PER_DOC)",
        )


def _truncation_warning(indices: list[int]) -> str:
    return f"part of the text of documents {', '.join(map(str, indices))} went unscored (longer than the model reads)"
