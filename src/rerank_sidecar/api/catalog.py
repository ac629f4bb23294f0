"""GET /v1/models: what this sidecar serves, in the OpenAI-style list that gateways and UIs read."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ..config import Task
from ..engine.pool import ModelPool, ServedModel
from .schemas import ModelCard, ModelList

router = APIRouter(tags=["model discovery"])


@router.get(
    "/v1/models", response_model=ModelList, response_description="Every name that picks a model, the default first."
)
async def list_models(request: Request) -> ModelList:
    """Every listed model by its name, aliases and (where unambiguous) model id, and what it serves; never loads a
    model."""
    pool: ModelPool = request.app.state.models
    created = int(time.time() - (time.monotonic() - request.app.state.started_at))
    return ModelList(
        data=[
            ModelCard(id=name, created=created, root=served.spec.name, max_model_len=_max_length(served),
                      tasks=_tasks(served))
            for name, served in pool.named_models()
        ]
    )


def _max_length(served: ServedModel) -> int:
    info = served.engine.info
    return info.max_length if info else served.engine.settings.max_length


def _tasks(served: ServedModel) -> list[Task] | None:
    tasks = served.engine.tasks
    return list(tasks) if tasks is not None else None
