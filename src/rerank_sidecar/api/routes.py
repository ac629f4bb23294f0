"""Native routes: /health, /warmup, /rerank, /rerank/batch, /metrics."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..config import Settings
from ..engine.engine import Engine, RerankJob, RerankOutcome
from ..models.base import Scorer
from .errors import ApiError
from .schemas import (
    ERROR_RESPONSES,
    HealthResponse,
    RerankBatchGroup,
    RerankBatchRequest,
    RerankBatchResponse,
    RerankGroupResult,
    RerankRequest,
    RerankResponse,
    RerankResult,
    WarmupResponse,
)
from .scoring import (
    best_first,
    check_instruction,
    check_limits,
    check_requested_model,
    note_request,
    rerank_outcome,
    rerank_outcomes,
)

router = APIRouter()


def _engine(request: Request) -> Engine:
    return request.app.state.engine


@router.get(
    "/health",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    response_description="The process is up; `status` says whether the model is loaded.",
)
async def health(request: Request) -> HealthResponse:
    """Liveness and model state; never loads the model."""
    engine = _engine(request)
    settings = engine.settings
    info = engine.scorer.info if engine.scorer else None
    return HealthResponse(
        status=engine.state,
        model_loaded=engine.state == "ready",
        model=info.model if info else settings.served_model_id,
        revision=info.revision if info else settings.model_revision,
        configured_revision=settings.model_revision,
        family=info.family if info else None,
        backend=info.backend if info else None,
        device=info.device if info else None,
        dtype=info.dtype if info else None,
        details=info.details if info else None,
        scheduler=settings.scheduler,
        uptime_s=round(time.monotonic() - request.app.state.started_at, 3),
        queue_depth=engine.queued_pairs,
        pid=os.getpid(),
        replica=getattr(request.app.state, "replica_id", None),
        version=__version__,
        error=engine.error,
    )


@router.post(
    "/warmup",
    response_model=WarmupResponse,
    responses=ERROR_RESPONSES,
    response_description="The model is loaded and warm.",
)
async def warmup(request: Request) -> WarmupResponse:
    """Loads the model if needed and runs one tiny forward pass; idempotent."""
    report = await _engine(request).load()
    info = report.info
    request.state.model, request.state.revision = info.model, info.revision
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
    response_model=RerankResponse,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    response_description="Scores in input order and results best first.",
)
async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
    """Scores every document against the query: `scores` in input order, `results` best first."""
    started = time.perf_counter()
    engine = _engine(request)
    settings = engine.settings
    check_requested_model(settings, body.model)
    check_limits(settings, body.query, body.documents)
    check_instruction(settings, body.instruction)
    note_request(request, body.query, body.documents, settings)
    outcome = await rerank_outcome(request, engine, RerankJob(body.query, body.documents, body.instruction))
    assert engine.scorer is not None
    scores = outcome.raw if body.raw_scores else engine.scorer.relevance(outcome.raw)
    info = engine.scorer.info
    return RerankResponse(
        model=info.model,
        revision=info.revision,
        scores=scores.tolist(),
        results=[
            RerankResult(
                index=index,
                relevance_score=float(scores[index]),
                document=body.documents[index] if body.return_documents else None,
            )
            for index in best_first(scores, body.top_n)
        ],
        truncated=outcome.truncated,
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
    engine = _engine(request)
    settings = engine.settings
    check_requested_model(settings, body.model)
    check_instruction(settings, body.instruction)
    _check_batch_limits(settings, body)
    for group in body.groups:
        note_request(request, group.query, group.documents, settings)
    jobs = [RerankJob(group.query, group.documents, body.instruction) for group in body.groups]
    outcomes = await rerank_outcomes(request, engine, jobs)
    scorer = engine.scorer
    assert scorer is not None
    return RerankBatchResponse(
        model=scorer.info.model,
        revision=scorer.info.revision,
        groups=[
            _group_result(scorer, body, group, outcome) for group, outcome in zip(body.groups, outcomes, strict=True)
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
    scorer: Scorer, body: RerankBatchRequest, group: RerankBatchGroup, outcome: RerankOutcome
) -> RerankGroupResult:
    """One group's scores in input order and results best first, with the batch's options applied."""
    scores = outcome.raw if body.raw_scores else scorer.relevance(outcome.raw)
    return RerankGroupResult(
        scores=scores.tolist(),
        results=[
            RerankResult(
                index=index,
                relevance_score=float(scores[index]),
                document=group.documents[index] if body.return_documents else None,
            )
            for index in best_first(scores, body.top_n)
        ],
        truncated=outcome.truncated,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["router", "ApiError"]
