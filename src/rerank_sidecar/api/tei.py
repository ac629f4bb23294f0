"""text-embeddings-inference's contract: `POST /rerank` with `texts` (dispatched here from routes.py), `POST /embed`,
`GET /info`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from .. import __version__
from ..engine.engine import RerankJob
from ..engine.errors import DocumentTooLong
from .dispatch import pick_engine
from .embedding import EmbeddingRequest, embed
from .errors import ApiError
from .results import ranked_results
from .schemas import ERROR_RESPONSES
from .scoring import FieldNames, ScoringRequest, score
from .tei_schemas import (
    TeiClassifierLabels,
    TeiEmbeddingModel,
    TeiEmbedRequest,
    TeiEmbedResponse,
    TeiInfo,
    TeiModelType,
    TeiRank,
    TeiRerankRequest,
    TruncationDirection,
    tei_error_responses,
)

router = APIRouter(tags=["text-embeddings-inference compatible"])

# TEI's names of the poolings.
_TEI_POOLING = {"mean": "mean", "cls": "cls", "lasttoken": "last_token"}


async def rerank_tei(body: TeiRerankRequest, request: Request) -> list[TeiRank]:
    """TEI's /rerank: every text scored against the query, a bare array best first."""
    if not body.texts:
        raise ApiError(400, "empty", "`texts` cannot be empty")
    job = RerankJob(
        query=body.query,
        documents=body.texts,
        long_docs="truncate" if body.truncate else None,
        truncation_side="left" if body.truncation_direction is TruncationDirection.LEFT else "right",
        refuse_overlong=body.truncate is False,
    )
    try:
        # TEI's request names no model: the default serves it.
        [scored] = await score(request, ScoringRequest(
            model=None, jobs=[job], raw_scores=body.raw_scores, fields=[FieldNames(documents="texts")],
            all_documents_field="texts",
        ))
    except DocumentTooLong as too_long:
        raise ApiError(422, "validation_error", f"texts.{too_long}") from too_long
    return ranked_results(
        scored.scores, None,
        lambda index, score: TeiRank(index=index, score=score, text=body.texts[index] if body.return_text else None),
    )


@router.post(
    "/embed",
    response_model=TeiEmbedResponse,
    responses=tei_error_responses(ERROR_RESPONSES),
    response_description="One vector per input, in input order (a bare array, as TEI answers).",
)
async def embed_tei(body: TeiEmbedRequest, request: Request) -> TeiEmbedResponse:
    """TEI's /embed: `truncate` true or absent cuts an over-long text, false refuses it (400); TEI's error shape."""
    outcome = await embed(request, EmbeddingRequest(
        model=None,  # TEI's request names no model: the default serves it
        texts=body.texts,
        texts_field="inputs",
        truncate=body.truncate is not False,
        truncation_side="left" if body.truncation_direction is TruncationDirection.LEFT else "right",
        truncate_hint="send truncate: true to cut it",
        prompt_name=body.prompt_name,
        dimensions=body.dimensions,
        normalize=body.normalize,
    ))
    return TeiEmbedResponse(outcome.vectors.tolist())


@router.get(
    "/info",
    response_model=TeiInfo,
    response_model_exclude_none=True,
    responses={503: ERROR_RESPONSES[503]},
    response_description="The served model and the limits in force, in text-embeddings-inference's shape.",
)
async def info(request: Request) -> TeiInfo:
    """TEI's /info of the default model, from the running settings and the loaded model (loaded first if need be)."""
    engine = pick_engine(request, None)
    await engine.ensure_loaded()
    settings, loaded, budget = engine.settings, engine.info, engine.budget
    assert loaded is not None and budget is not None
    return TeiInfo(
        model_id=loaded.model,
        model_sha=loaded.revision,
        model_dtype=loaded.dtype,
        served_model_name=settings.served_model_id,
        model_type=_model_type(loaded.embedding.pooling if loaded.embedding else None, loaded.labels),
        max_concurrent_requests=settings.max_queued_pairs,
        max_input_length=loaded.max_length,
        max_batch_tokens=budget.max_tokens,
        max_batch_requests=settings.max_batch_pairs,
        max_client_batch_size=settings.max_embed_inputs if loaded.embedding else settings.max_documents,
        auto_truncate=True,
        version=__version__,
    )


def _model_type(pooling: str | None, labels: tuple[str, ...]) -> TeiModelType:
    """TEI's one variant: `embedding` with its pooling for a model that embeds (None: it does not), `reranker` with
    its labels otherwise."""
    if pooling is not None:
        return TeiModelType(embedding=TeiEmbeddingModel(pooling=_TEI_POOLING[pooling]))
    return TeiModelType(
        reranker=TeiClassifierLabels(
            id2label={str(index): label for index, label in enumerate(labels)},
            label2id={label: index for index, label in enumerate(labels)},
        )
    )
