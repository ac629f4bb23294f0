"""Native routes: /health, /warmup, /rerank (native or TEI-shaped), /rerank/batch, /metrics."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Discriminator, Tag

from .. import __version__
from ..config import Settings
from ..engine.engine import RerankJob, RerankOutcome
from ..engine.pool import ModelPool, ServedModel
from .dispatch import pick_engine, rerank_outcome, rerank_outcomes
from .errors import ApiError
from .limits import check_instruction, check_limits
from .request_notes import note_model, note_request
from .results import ranked_results
from .schemas import (
    NATIVE_BODY,
    TEI_BODY,
    ERROR_RESPONSES,
    HealthResponse,
    ModelHealth,
    RerankBatchRequest,
    RerankBatchResponse,
    RerankGroupResult,
    RerankRequest,
    RerankResponse,
    RerankResult,
    WarmupResponse,
)
from .tei import rerank_tei
from .tei_schemas import TeiErrorResponse, TeiRank, TeiRerankRequest

router = APIRouter()

def _body_shape(body: Any) -> str:
    """TEI's shape names its documents `texts`; everything else is read as the native shape."""
    if isinstance(body, dict):
        return TEI_BODY if "texts" in body and "documents" not in body else NATIVE_BODY
    return TEI_BODY if isinstance(body, TeiRerankRequest) else NATIVE_BODY


# /rerank answers errors in the shape of the body it was sent.
TEI_OR_NATIVE_ERROR_RESPONSES = {
    status: {**response, "model": response["model"] | TeiErrorResponse} for status, response in ERROR_RESPONSES.items()
}

RerankBody = Annotated[
    Annotated[RerankRequest, Tag(NATIVE_BODY)] | Annotated[TeiRerankRequest, Tag(TEI_BODY)],
    Discriminator(_body_shape),
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
        **default.model_dump(include=set(_DEFAULT_MODEL_FIELDS)),
        model_loaded=default.loaded,
        scheduler=pool.settings.scheduler,
        uptime_s=round(time.monotonic() - request.app.state.started_at, 3),
        queue_depth=sum(model.engine.queued_pairs for model in pool.models),
        pid=os.getpid(),
        replica=getattr(request.app.state, "replica_id", None),
        version=__version__,
        models=[_model_health(model) for model in pool.models],
    )


# What /health says at its top level about the default model (the one of RERANK_MODEL_NAME, or the first listed).
_DEFAULT_MODEL_FIELDS = ("status", "model", "revision", "configured_revision", "family", "backend", "device", "dtype",
                         "details", "error")


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
    engine = pick_engine(request, body.model)
    settings = engine.settings
    check_limits(settings, body.query, body.documents)
    check_instruction(settings, body.instruction)
    note_request(request, body.query, body.documents, settings)
    outcome = await rerank_outcome(request, engine, RerankJob(body.query, body.documents, body.instruction))
    group = _group_result(outcome, body.documents, body.top_n, body.raw_scores, body.return_documents)
    return RerankResponse(
        model=outcome.info.model,
        revision=outcome.info.revision,
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
    engine = pick_engine(request, body.model)
    settings = engine.settings
    check_instruction(settings, body.instruction)
    _check_batch_limits(settings, body)
    for group in body.groups:
        note_request(request, group.query, group.documents, settings)
    jobs = [RerankJob(group.query, group.documents, body.instruction) for group in body.groups]
    outcomes = await rerank_outcomes(request, engine, jobs)
    return RerankBatchResponse(
        model=outcomes[0].info.model,
        revision=outcomes[0].info.revision,
        groups=[
            _group_result(outcome, group.documents, body.top_n, body.raw_scores, body.return_documents)
            for group, outcome in zip(body.groups, outcomes, strict=True)
        ],
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )


def _check_batch_limits(settings: Settings, body: RerankBatchRequest) -> None:
    """Each group within the per-request limits, and all groups' documents together within RERANK_MAX_DOCUMENTS."""
    for index, group in enumerate(body.groups):
        check_limits(settings, group.query, group.documents, f"groups.{index}.documents", f"groups.{index}.query")
    total = sum(len(group.documents) for group in body.groups)
    if total > settings.max_documents:
        raise ApiError(
            422, "validation_error",
            f"groups: {total} documents in all exceeds the limit of {settings.max_documents} (RERANK_MAX_DOCUMENTS)",
        )


def _group_result(
    outcome: RerankOutcome, documents: list[str], top_n: int | None, raw_scores: bool, return_documents: bool
) -> RerankGroupResult:
    """One query's scores in input order and its results best first, with the request's options applied."""
    scores = outcome.raw if raw_scores else outcome.relevance
    return RerankGroupResult(
        scores=scores.tolist(),
        results=ranked_results(
            scores,
            top_n,
            lambda index, score: RerankResult(
                index=index, relevance_score=score, document=documents[index] if return_documents else None
            ),
        ),
        truncated=outcome.truncated,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
