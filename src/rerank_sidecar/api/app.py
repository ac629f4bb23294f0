"""The FastAPI application: settings, engine, request log and routes wired together."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import BaseRoute

from .. import __version__
from ..config import Settings
from ..engine.pool import ModelPool
from ..metrics import Metrics
from ..requestlog import RequestLog
from .auth import ApiKeyMiddleware, UnsafeExposure, exposure_refusal
from .catalog import router as catalog_router
from .compat import router as compat_router
from .errors import install_error_handlers
from .middleware import BodyLimitMiddleware, RequestContextMiddleware
from .openai_compat import router as openai_router
from .routes import router
from .tei import router as tei_router


def create_app(settings: Settings | None = None) -> FastAPI:
    """Builds the app; each model loads later, on its first /warmup or request."""
    settings = settings or Settings()
    if refusal := exposure_refusal(settings):
        raise UnsafeExposure(refusal)
    metrics = Metrics()
    request_log = RequestLog(settings.log_path, settings.log_max_bytes, settings.log_backups)
    models = ModelPool(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        unloader = asyncio.create_task(models.keep_unloading_idle())
        try:
            yield
        finally:
            unloader.cancel()
            models.stop()
            request_log.close()

    app = FastAPI(
        title="rerank-sidecar",
        version=__version__,
        description="One local reranker and embedder shared by every process on the machine. Scores are in [0, 1].",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.models = models
    app.state.metrics = metrics
    app.state.request_log = request_log
    app.state.started_at = time.monotonic()
    app.include_router(router)
    app.include_router(compat_router)
    app.include_router(tei_router)
    app.include_router(catalog_router)
    app.include_router(openai_router)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)  # inner to the next: 401s get ids, log lines
    app.add_middleware(
        RequestContextMiddleware,
        request_log=request_log,
        metrics=metrics,
        routes=_route_paths(app.routes),
    )
    return app


def _route_paths(routes: Iterable[BaseRoute]) -> list[str]:
    """Every served path, including those of included routers (used to bound metric labels)."""
    paths: list[str] = []
    for route in routes:
        if isinstance(path := getattr(route, "path", None), str):
            paths.append(path)
        if (included := getattr(route, "original_router", None)) is not None:
            paths.extend(_route_paths(included.routes))
    return paths
