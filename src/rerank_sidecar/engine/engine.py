"""The engine: loads the model once, turns a rerank job into pairs, schedules them, and gathers scores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..config import Settings
from ..metrics import Metrics
from ..models.base import EncodedDocument, LongDocs, Scorer, ScorerInfo
from ..models.registry import load_scorer
from ..models.resolve import force_offline
from .batcher import MicroBatcher
from .cache import CachedScore, ScoreCache, cache_key
from .scheduler import BatchBudget, Scheduler
from .serial import SerialScheduler

ModelState = Literal["idle", "loading", "ready", "error"]


class ModelUnavailable(RuntimeError):
    """The model could not be loaded; the message says why and how to fix it."""


class DeadlineExceeded(TimeoutError):
    """The request's pairs were not all scored before RERANK_REQUEST_TIMEOUT_S."""


@dataclass(frozen=True, slots=True)
class RerankJob:
    """One query against its documents, as the engine needs it."""

    query: str
    """The search query."""
    documents: Sequence[str]
    """Document texts, in the caller's order."""
    instruction: str | None = None
    """Qwen3-Reranker task instruction; None takes the configured default."""
    long_docs: LongDocs | None = None
    """truncate or chunk; None takes the configured default."""
    max_chunks: int | None = None
    """Chunk cap per document; None takes the configured default."""
    max_document_tokens: int | None = None
    """Cut each document to its first this-many tokens before scoring (Cohere's max_tokens_per_doc); None: no cut."""


@dataclass(frozen=True, slots=True)
class RerankOutcome:
    """Raw scores of one job, in input order."""

    raw: np.ndarray
    """Raw score per document."""
    truncated: list[int]
    """Indices of documents part of whose text went unscored."""
    tokens: int
    """Tokens of every scored window, cache hits included."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What /warmup returns about loading."""

    info: ScorerInfo
    """The loaded scorer."""
    load_s: float
    """Seconds the load took (from the first load, also on later calls)."""
    warmup_s: float
    """Seconds of this call's tiny forward pass."""
    already_loaded: bool
    """True when this call found the model loaded."""


class Engine:
    """Owns the scorer and its scheduler; every HTTP route scores through `rerank`."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state: ModelState = "idle"
        self.error: str | None = None
        self.scorer: Scorer | None = None
        self.load_s: float | None = None
        self._scheduler: Scheduler | None = None
        self._load_lock = asyncio.Lock()
        self._cache = ScoreCache(settings.cache_size) if settings.cache_size > 0 else None

    @property
    def queued_pairs(self) -> int:
        return self._scheduler.queued_pairs if self._scheduler else 0

    async def load(self) -> LoadReport:
        """Loads the model unless loaded (concurrent callers share one load), then runs a tiny forward pass."""
        async with self._load_lock:
            already = self.state == "ready"
            if not already:
                await self._load_locked()
        started = time.perf_counter()
        await self.rerank(RerankJob(query="warm-up", documents=["warm-up"]), use_cache=False)
        assert self.scorer is not None and self.load_s is not None
        return LoadReport(self.scorer.info, self.load_s, time.perf_counter() - started, already)

    async def _load_locked(self) -> None:
        self.state = "loading"
        started = time.perf_counter()
        force_offline()
        try:
            scorer = await asyncio.to_thread(load_scorer, self.settings)
        except Exception as exc:  # any load failure is reported, never raised as a 500
            self.state, self.error = "error", f"{type(exc).__name__}: {exc}"
            raise ModelUnavailable(self.error) from exc
        self.load_s = time.perf_counter() - started
        budget = BatchBudget.for_scorer(self.settings, scorer.info)
        scheduler_type = MicroBatcher if self.settings.scheduler == "batched" else SerialScheduler
        self._scheduler = scheduler_type(scorer, budget, self.settings.max_queued_pairs, self.metrics)
        self.scorer, self.state, self.error = scorer, "ready", None
        self.metrics.model_load_seconds.set(self.load_s)
        self.metrics.model_loaded.set(1)
        self.metrics.model_loads.inc()

    async def ensure_loaded(self) -> Scorer:
        if self.state != "ready":
            async with self._load_lock:
                if self.state != "ready":
                    await self._load_locked()
        assert self.scorer is not None
        return self.scorer

    async def rerank(self, job: RerankJob, use_cache: bool = True) -> RerankOutcome:
        """Raw scores for every document of `job`; cancelling the caller drops its queued pairs."""
        scorer = await self.ensure_loaded()
        long_docs = job.long_docs or self.settings.long_docs
        max_chunks = job.max_chunks or self.settings.max_chunks_per_doc
        instruction = job.instruction or self.settings.instruction
        documents, cut = job.documents, set()
        if job.max_document_tokens is not None:
            documents, cut = await asyncio.to_thread(scorer.cut_documents, job.documents, job.max_document_tokens)
        cache = self._cache if use_cache else None
        keys = [self._key(scorer, instruction, long_docs, max_chunks, job.query, doc) for doc in documents] if cache is not None else []
        known: dict[int, CachedScore] = {}
        if cache is not None:
            for index, key in enumerate(keys):
                if (hit := cache.get(key)) is not None:
                    known[index] = hit
            self.metrics.cache_hits.inc(len(known))
            self.metrics.cache_misses.inc(len(documents) - len(known))
        missing = [index for index in range(len(documents)) if index not in known]
        if missing:
            texts = [documents[index] for index in missing]
            encoded = await asyncio.to_thread(scorer.encode, job.query, texts, instruction, long_docs, max_chunks)
            for index, scored in zip(missing, await self._score_documents(encoded), strict=True):
                known[index] = scored
                if cache is not None:
                    cache.put(keys[index], scored)
        ordered = [known[index] for index in range(len(documents))]
        return RerankOutcome(
            raw=np.array([entry.raw for entry in ordered], dtype=np.float64),
            truncated=[index for index, entry in enumerate(ordered) if entry.truncated or index in cut],
            tokens=sum(entry.tokens for entry in ordered),
        )

    async def _score_documents(self, documents: list[EncodedDocument]) -> list[CachedScore]:
        """Scores every window of every document in one submission; a document keeps its best window."""
        assert self._scheduler is not None
        windows = [window for document in documents for window in document.windows]
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                raw = await self._scheduler.score(windows)
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"the request was not scored within {self.settings.request_timeout_s} s "
                "(RERANK_REQUEST_TIMEOUT_S); its queued pairs were dropped"
            ) from exc
        scored, start = [], 0
        for document in documents:
            end = start + len(document.windows)
            tokens = sum(len(window.input_ids) for window in document.windows)
            scored.append(CachedScore(float(raw[start:end].max()), document.truncated, tokens))
            start = end
        return scored

    def _key(self, scorer: Scorer, instruction: str, long_docs: str, max_chunks: int, query: str, doc: str) -> bytes:
        info = scorer.info
        options = f"{info.family}|{info.backend}|{info.max_length}|{long_docs}|{max_chunks}"
        return cache_key(info.model, info.revision, options, instruction, query, doc)

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()
        if self.scorer is not None:
            self.scorer.close()
