"""GET /v1/models: what this sidecar serves, in the OpenAI-style list that gateways and UIs read."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from ..engine.engine import Engine
from .schemas import ModelCard, ModelList

router = APIRouter(tags=["model discovery"])


@router.get(
    "/v1/models", response_model=ModelList, response_description="The served model id first, then its aliases."
)
async def list_models(request: Request) -> ModelList:
    """The served model and its aliases; never loads the model."""
    engine: Engine = request.app.state.engine
    settings = engine.settings
    served = settings.served_model_id
    max_length = engine.info.max_length if engine.info else settings.max_length
    created = int(time.time() - (time.monotonic() - request.app.state.started_at))
    return ModelList(
        data=[
            ModelCard(id=name, created=created, root=served, max_model_len=max_length)
            for name in dict.fromkeys([served, *settings.aliases])
        ]
    )
