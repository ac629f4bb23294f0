"""Every model a sidecar may serve, each behind its own Engine: picked by name, loaded on first use, released when idle."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

from ..config import ModelSpec, Settings
from ..metrics import Metrics
from .compute import SharedCompute
from .engine import Engine
from .errors import UnknownModel


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One listed model and the engine that serves it."""

    spec: ModelSpec
    """Its entry in RERANK_MODELS (or the one model of RERANK_MODEL_NAME)."""
    engine: Engine
    """Loads, scores and unloads it."""


class ModelPool:
    """The listed models, the first the default; only a listed model can ever be loaded.

    Every engine shares one SharedCompute (one forward pass at a time, one queue bound). Before a
    model loads, the pool evicts the least recently used idle model when RERANK_MAX_LOADED_MODELS
    are loaded already; `unload_idle` unloads models idle past RERANK_KEEP_ALIVE_S. A model with
    queued or running work is never unloaded.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.compute = SharedCompute(settings.max_queued_pairs)
        self.models = [
            ServedModel(spec, Engine(settings.for_model(spec), metrics.for_model(spec.name), self.compute,
                                     self._make_room, spec.name))
            for spec in settings.model_specs
        ]
        self._by_name = self._lookup()
        self._room_lock = asyncio.Lock()

    def _lookup(self) -> dict[str, ServedModel]:
        """Names and aliases pick their model; a model id picks it too where no other listed model shares it."""
        by_name = {name: served for served in self.models for name in served.spec.names}
        ids = Counter(served.spec.served_model_id for served in self.models)
        for served in self.models:
            if ids[served.spec.served_model_id] == 1:
                by_name.setdefault(served.spec.served_model_id, served)
        return by_name

    @property
    def default(self) -> ServedModel:
        return self.models[0]

    def named_models(self) -> list[tuple[str, ServedModel]]:
        """Every name that picks a model, with it: each model's name and aliases, then the unambiguous model ids."""
        return list(self._by_name.items())

    def pick(self, requested: str | None) -> ServedModel:
        """The model a request names (none or empty: the default); UnknownModel for any other name."""
        if not requested:
            return self.default
        served = self._by_name.get(requested)
        if served is None:
            raise UnknownModel(requested, [(model.spec.name, model.spec.aliases) for model in self.models])
        return served

    async def _make_room(self, loading: Engine) -> None:
        """Unloads the least recently used idle models until one more fits RERANK_MAX_LOADED_MODELS.

        When every loaded model is busy, the load goes ahead over the limit; `unload_idle` brings the
        count back once they are idle.
        """
        limit = self.settings.max_loaded_models
        if not limit:
            return
        async with self._room_lock:
            await self._evict_down_to(limit - 1, keep=loading)

    async def _evict_down_to(self, count: int, keep: Engine | None = None) -> None:
        loaded = [model.engine for model in self.models if model.engine.state in ("ready", "loading")]
        loaded = [engine for engine in loaded if engine is not keep]
        for engine in sorted(loaded, key=lambda engine: engine.last_used):
            if len(loaded) <= count:
                return
            if await engine.unload():
                loaded.remove(engine)

    async def unload_idle(self) -> None:
        """Unloads models idle past RERANK_KEEP_ALIVE_S, and idle ones over RERANK_MAX_LOADED_MODELS."""
        keep_alive = self.settings.keep_alive_s
        if keep_alive is not None:
            now = time.monotonic()
            for model in self.models:
                engine = model.engine
                if engine.state == "ready" and not engine.busy and now - engine.last_used >= keep_alive:
                    await engine.unload()
        if self.settings.max_loaded_models:
            async with self._room_lock:
                await self._evict_down_to(self.settings.max_loaded_models)

    async def keep_unloading_idle(self) -> None:
        """Runs `unload_idle` for the app's lifetime, often enough to honour the keep-alive within a second."""
        keep_alive = self.settings.keep_alive_s
        period = min(1.0, keep_alive / 4) if keep_alive is not None else 1.0
        while True:
            await asyncio.sleep(period)
            await self.unload_idle()

    def stop(self) -> None:
        for model in self.models:
            model.engine.stop()
