"""Native routes: /health, /warmup, /rerank (native or TEI-shaped), /rerank/batch, /metrics."""

from __future__ import annotations

import os
import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Discriminator, Tag

from .. import __version__
from ..engine.engine import RerankJob
from ..engine.pool import ModelPool, ServedModel
from .dialect import Dialect, current_dialect
from .dispatch import pick_engine
from .request_notes import note_model
from .results import group_result
from .schemas import (
    ERROR_RESPONSES,
    HealthResponse,
    ModelDescription,
    ModelHealth,
    RerankBatchRequest,
    RerankBatchResponse,
    RerankRequest,
    RerankResponse,
    WarmupResponse,
)
from .scoring import FieldNames, ScoringRequest, score
from .tei import rerank_tei
from .tei_schemas import TeiErrorResponse, TeiRank, TeiRerankRequest

router = APIRouter()

# /rerank answers errors in the request's dialect.
TEI_OR_NATIVE_ERROR_RESPONSES = {
    status: {**response, "model": response["model"] | TeiErrorResponse} for status, response in ERROR_RESPONSES.items()
}

# POST /rerank's body, read as the request's dialect says (decided from its first bytes before it was parsed).
RerankBody = Annotated[
    Annotated[RerankRequest, Tag(Dialect.NATIVE.value)] | Annotated[TeiRerankRequest, Tag(Dialect.TEI.value)],
    Discriminator(lambda _: current_dialect().value),
]


@router.get(
    "/health",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    response_description="The process is up; `status` says whether the default model is loaded, `models` each one.",
)
async def health(request: Request) -> HealthResponse:
    """Liveness and every model's state; never loads a model."""
    pool: ModelPool = request.app.state.models
    default = _model_health(pool.default)
    return HealthResponse(
        **default.model_dump(include=set(ModelDescription.model_fields)),
        model_loaded=default.loaded,
        scheduler=pool.settings.scheduler,
        uptime_s=round(time.monotonic() - request.app.state.started_at, 3),
        queue_depth=sum(model.engine.queued_pairs for model in pool.models),
        pid=os.getpid(),
        replica=getattr(request.app.state, "replica_id", None),
        version=__version__,
        models=[_model_health(model) for model in pool.models],
    )


def _model_health(served: ServedModel) -> ModelHealth:
    engine, spec = served.engine, served.spec
    info = engine.info
    return ModelHealth(
        name=spec.name,
        aliases=spec.aliases,
        status=engine.state,
        loaded=engine.state == "ready",
        model=info.model if info else spec.served_model_id,
        revision=info.revision if info else spec.revision,
        configured_revision=spec.revision,
        family=info.family if info else None,
        backend=info.backend if info else None,
        device=info.device if info else None,
        dtype=info.dtype if info else None,
        details=info.details if info else None,
        memory_bytes=engine.memory_bytes if info else None,
        idle_s=round(time.monotonic() - engine.last_used, 3),
        queue_depth=engine.queued_pairs,
        error=engine.error,
    )


@router.post(
    "/warmup",
    response_model=WarmupResponse,
    responses=ERROR_RESPONSES,
    response_description="The model is loaded and warm.",
)
async def warmup(
    request: Request, model: Annotated[str | None, Query(description="The model to warm; default: the first.")] = None
) -> WarmupResponse:
    """Loads the model if needed and runs one tiny forward pass; idempotent."""
    report = await pick_engine(request, model).load()
    info = report.info
    note_model(request, info.model, info.revision)
    return WarmupResponse(
        status="ready",
        model=info.model,
        revision=info.revision,
        family=info.family,
        backend=info.backend,
        device=info.device,
        already_loaded=report.already_loaded,
        load_s=round(report.load_s, 4),
        warmup_s=round(report.warmup_s, 4),
        details=info.details,
    )


@router.post(
    "/rerank",
    response_model=RerankResponse | list[TeiRank],
    response_model_exclude_none=True,
    responses=TEI_OR_NATIVE_ERROR_RESPONSES,
    response_description="Native: scores in input order and results best first. TEI-shaped (`texts`): a bare "
    "array of {index, score, text?}, best first.",
)
async def rerank(body: RerankBody, request: Request) -> RerankResponse | list[TeiRank]:
    """Scores every document against the query.

    The native body (`documents`) answers `scores` in input order and `results` best first. A
    text-embeddings-inference body (`texts`) answers as TEI does: an array best first, errors as `{error, error_type}`.
    """
    if isinstance(body, TeiRerankRequest):
        return await rerank_tei(body, request)
    started = time.perf_counter()
    [scored] = await score(request, ScoringRequest(
        model=body.model, jobs=[RerankJob(body.query, body.documents, body.instruction)], raw_scores=body.raw_scores
    ))
    group = group_result(scored.scores, body.documents, body.top_n, body.return_documents, scored.outcome.truncated)
    return RerankResponse(
        model=scored.outcome.info.model,
        revision=scored.outcome.info.revision,
        scores=group.scores,
        results=group.results,
        truncated=group.truncated,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )


@router.post(
    "/rerank/batch",
    response_model=RerankBatchResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    response_description="One result per group, in request order.",
)
async def rerank_batch(body: RerankBatchRequest, request: Request) -> RerankBatchResponse:
    """Scores several queries, each against its own documents; all pairs share the scheduler's batches."""
    started = time.perf_counter()
    scored = await score(request, ScoringRequest(
        model=body.model,
        jobs=[RerankJob(group.query, group.documents, body.instruction) for group in body.groups],
        raw_scores=body.raw_scores,
        fields=[FieldNames(f"groups.{index}.query", f"groups.{index}.documents") for index in range(len(body.groups))],
        all_documents_field="groups",
    ))
    info = scored[0].outcome.info
    return RerankBatchResponse(
        model=info.model,
        revision=info.revision,
        groups=[
            group_result(group_scored.scores, group.documents, body.top_n, body.return_documents,
                         group_scored.outcome.truncated)
            for group, group_scored in zip(body.groups, scored, strict=True)
        ],
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
