"""Cohere/Jina-compatible routes (rerank, and Cohere v2 embed), so LangChain, LlamaIndex, LiteLLM, Haystack and the
Cohere SDK work unchanged."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request

from ..engine.engine import RerankJob
from .compat_schemas import (
    BilledUnits,
    CohereBilledUnits,
    CohereEmbeddings,
    CohereEmbedMeta,
    CohereEmbedRequest,
    CohereEmbedResponse,
    CompatMeta,
    CompatRerankRequest,
    CompatRerankResponse,
    CompatUsage,
)
from .embedding import EmbeddingRequest, embed
from .errors import ApiError
from .results import compat_results
from .schemas import ERROR_RESPONSES
from .scoring import ScoringRequest, score

# Cohere counts one search unit per query and started hundred documents.
DOCUMENTS_PER_SEARCH_UNIT = 100

# The embedding types /v2/embed serves.
SERVED_EMBEDDING_TYPES = ("float",)

# Cohere's input types that name one of the model's prompts; the others (classification, clustering) take none.
_INPUT_TYPE_PROMPTS = {"search_query": "query", "search_document": "document"}

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
    job = RerankJob(
        query=body.query,
        documents=body.texts,
        # Asking for a chunk cap asks for chunking, as on Cohere v1, whatever RERANK_LONG_DOCS says.
        long_docs="chunk" if body.max_chunks_per_doc is not None else None,
        max_chunks=body.max_chunks_per_doc,
        max_document_tokens=body.max_tokens_per_doc,
    )
    [scored] = await score(request, ScoringRequest(model=body.model, jobs=[job]))
    outcome = scored.outcome
    return CompatRerankResponse(
        id=request.state.request_id,
        model=outcome.info.model,
        results=compat_results(scored.scores, body.documents, body.top_n, body.return_documents),
        meta=CompatMeta(
            billed_units=BilledUnits(search_units=max(1, math.ceil(len(body.documents) / DOCUMENTS_PER_SEARCH_UNIT))),
            warnings=[_truncation_warning(outcome.truncated)] if outcome.truncated else None,
        ),
        usage=CompatUsage(prompt_tokens=outcome.tokens, total_tokens=outcome.tokens),
    )


def _truncation_warning(indices: list[int]) -> str:
    return f"part of the text of documents {', '.join(map(str, indices))} went unscored (longer than the model reads)"


@router.post(
    "/v2/embed",
    response_model=CohereEmbedResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    response_description="Float vectors of the texts, in input order, with the texts and the tokens read.",
)
async def embed_v2(body: CohereEmbedRequest, request: Request) -> CohereEmbedResponse:
    """Cohere v2 embed: float vectors of `texts`, with the model's query or document prompt as `input_type` says."""
    for index, kind in enumerate(body.embedding_types):
        if kind not in SERVED_EMBEDDING_TYPES:
            raise ApiError(
                400, "validation_error",
                f"embedding_types.{index}: {kind!r} is not served; this sidecar serves "
                f"{', '.join(SERVED_EMBEDDING_TYPES)}",
                param=f"embedding_types.{index}",
            )
    outcome = await embed(request, EmbeddingRequest(
        model=body.model,
        texts=body.texts,
        texts_field="texts",
        truncate=None if body.truncate == "NONE" else True,
        truncation_side="left" if body.truncate == "START" else "right",
        truncate_hint="send truncate END or START to cut it",
        prompt_name=_INPUT_TYPE_PROMPTS.get(body.input_type) if body.input_type else None,
        prompt="" if body.input_type in ("classification", "clustering") else None,
        prompt_if_known=True,
        prompt_field="input_type",
        dimensions=body.output_dimension,
        dimensions_field="output_dimension",
    ))
    return CohereEmbedResponse(
        id=request.state.request_id,
        embeddings=CohereEmbeddings(float=outcome.vectors.tolist()),
        texts=body.texts,
        meta=CohereEmbedMeta(
            billed_units=CohereBilledUnits(input_tokens=sum(outcome.tokens)),
            warnings=[_cut_warning(outcome.truncated)] if outcome.truncated else None,
        ),
    )


def _cut_warning(indices: list[int]) -> str:
    return f"texts {', '.join(map(str, indices))} were cut to the model's window before embedding"
