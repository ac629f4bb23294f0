"""What every rerank route shares: limits, the model-name check, disconnect handling, and ranking."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import numpy as np
from fastapi import Request

from ..config import Settings
from ..engine.engine import Engine, RerankJob, RerankOutcome
from .errors import ApiError, ClientDisconnected

T = TypeVar("T")


def check_limits(
    settings: Settings, query: str, documents: Sequence[str], field: str = "documents", query_field: str = "query"
) -> None:
    """422 naming the field and the limit when a request is over one, or holds text that is not Unicode."""
    if len(query) > settings.max_query_chars:
        raise ApiError(
            422, "validation_error",
            f"{query_field}: {len(query)} characters exceeds the limit of {settings.max_query_chars} "
            "(RERANK_MAX_QUERY_CHARS)",
        )
    check_unicode(query_field, query)
    if len(documents) > settings.max_documents:
        raise ApiError(
            422, "validation_error",
            f"{field}: {len(documents)} documents exceeds the limit of {settings.max_documents} (RERANK_MAX_DOCUMENTS)",
        )
    for index, document in enumerate(documents):
        if len(document) > settings.max_document_chars:
            raise ApiError(
                422, "validation_error",
                f"{field}.{index}: {len(document)} characters exceeds the limit of "
                f"{settings.max_document_chars} (RERANK_MAX_DOCUMENT_CHARS)",
            )
        check_unicode(f"{field}.{index}", document)


def check_unicode(field: str, text: str) -> None:
    """422 for a lone surrogate (JSON allows the escape "\\ud800"; no tokenizer can take it)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            422, "validation_error",
            f"{field}: character {exc.start} is a lone UTF-16 surrogate ({text[exc.start]!a}), not valid Unicode text",
        ) from None


def check_instruction(settings: Settings, instruction: str | None) -> None:
    if instruction is not None and len(instruction) > settings.max_query_chars:
        raise ApiError(
            422, "validation_error",
            f"instruction: {len(instruction)} characters exceeds the limit of {settings.max_query_chars} "
            "(RERANK_MAX_QUERY_CHARS)",
        )
    if instruction is not None:
        check_unicode("instruction", instruction)


def check_requested_model(settings: Settings, requested: str | None) -> None:
    """An empty name, the served id or an alias passes; anything else is refused, naming all three."""
    if not requested or requested == settings.served_model_id or requested in settings.aliases:
        return
    aliases = ", ".join(settings.aliases) or "none (set RERANK_MODEL_ALIASES)"
    raise ApiError(
        400, "model_not_served",
        f"model {requested!r} is not served here; this sidecar serves {settings.served_model_id!r} "
        f"(aliases: {aliases})",
    )


def note_request(request: Request, query: str, documents: Sequence[str], settings: Settings) -> None:
    """Records the request's size (and, only when enabled, its text) for the request log."""
    state = request.state
    state.documents = getattr(state, "documents", 0) + len(documents)
    state.chars = getattr(state, "chars", 0) + len(query) + sum(len(document) for document in documents)
    if settings.log_text:
        state.query_text = query if not hasattr(state, "query_text") else f"{state.query_text}\n{query}"
        state.document_texts = [*getattr(state, "document_texts", []), *documents]


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


async def rerank_outcome(request: Request, engine: Engine, job: RerankJob) -> RerankOutcome:
    return (await rerank_outcomes(request, engine, [job]))[0]


async def rerank_outcomes(request: Request, engine: Engine, jobs: Sequence[RerankJob]) -> list[RerankOutcome]:
    """Runs the jobs concurrently, so their pairs share the scheduler's batches; one outcome per job, in order."""
    outcomes = await until_disconnect(request, _all_or_none([engine.rerank(job) for job in jobs]))
    scorer = engine.scorer
    assert scorer is not None
    request.state.model, request.state.revision = scorer.info.model, scorer.info.revision
    return outcomes


async def _all_or_none(works: Sequence[Awaitable[T]]) -> list[T]:
    """Awaits every work; when one fails the others are cancelled, so their queued pairs are dropped."""
    tasks = [asyncio.ensure_future(work) for work in works]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


def best_first(scores: np.ndarray, top_n: int | None) -> list[int]:
    """Indices by descending score (ties keep input order), cut to top_n."""
    order = np.argsort(-scores, kind="stable").tolist()
    return order if top_n is None else order[:top_n]
