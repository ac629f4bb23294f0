"""Native routes: /health, /warmup, /rerank, /metrics."""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..engine.engine import Engine, RerankJob
from .errors import ApiError
from .schemas import ErrorResponse, HealthResponse, RerankRequest, RerankResponse, RerankResult, WarmupResponse
from .scoring import best_first, check_instruction, check_limits, check_requested_model, note_request, rerank_outcome

ERRORS = {
    code: {"model": ErrorResponse}
    for code in (400, 401, 413, 422, 503)
}

router = APIRouter()


def _engine(request: Request) -> Engine:
    return request.app.state.engine


@router.get("/health", response_model=HealthResponse, response_model_exclude_none=True)
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
        scheduler=settings.scheduler,
        uptime_s=round(time.monotonic() - request.app.state.started_at, 3),
        queue_depth=engine.queued_pairs,
        pid=os.getpid(),
        version=__version__,
        error=engine.error,
    )


@router.post("/warmup", response_model=WarmupResponse, responses=ERRORS)
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
    )


@router.post("/rerank", response_model=RerankResponse, response_model_exclude_none=True, responses=ERRORS)
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


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


__all__ = ["router", "ApiError"]
