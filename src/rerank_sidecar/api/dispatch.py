"""Hands a route's jobs to the engine and waits, dropping their queued pairs if the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from fastapi import Request

from ..engine.engine import Engine, RerankJob, RerankOutcome
from ..engine.pool import ModelPool
from .errors import ClientDisconnected
from .request_notes import note_model

T = TypeVar("T")


def pick_engine(request: Request, requested: str | None) -> Engine:
    """The engine of the model a request names (none: the default); UnknownModel (400) for a name not listed."""
    pool: ModelPool = request.app.state.models
    return pool.pick(requested).engine


async def rerank_outcomes(request: Request, engine: Engine, jobs: Sequence[RerankJob]) -> list[RerankOutcome]:
    """Runs the jobs concurrently, so their pairs share the scheduler's batches; one outcome per job, in order."""
    outcomes = await until_disconnect(request, _all_or_none([engine.rerank(job) for job in jobs]))
    if outcomes:
        note_model(request, outcomes[0].info.model, outcomes[0].info.revision)
    return outcomes


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Awaits `work`, cancelling it (and so dropping its queued pairs) if the client goes away first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientDisconnected()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _all_or_none(works: Sequence[Awaitable[T]]) -> list[T]:
    """Awaits every work; when one fails the others are cancelled, so their queued pairs are dropped."""
    tasks = [asyncio.ensure_future(work) for work in works]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
