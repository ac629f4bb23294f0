"""Micro-batching scheduler: pairs of concurrent requests share forward passes, taken round-robin."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..metrics import Metrics
from ..models.base import EncodedPair, Scorer
from .scheduler import BatchBudget, QueueFull, RequestTooLarge, SchedulerStopped, retry_after_seconds

# Weight of the newest batch in the moving average of throughput used for Retry-After.
_THROUGHPUT_SMOOTHING = 0.2


@dataclass(eq=False)
class _Job:
    """One request's pairs on their way through the queue."""

    pairs: Sequence[EncodedPair]
    """The request's pairs, in the request's order."""
    loop: asyncio.AbstractEventLoop
    """The event loop awaiting the result."""
    future: asyncio.Future[np.ndarray]
    """Resolved with all raw scores once the last pair is scored."""
    order: list[int] = field(init=False)
    """Pair indices longest first, so consecutive batches of one request pad little."""
    cursor: int = 0
    """How many of `order` have been handed to a batch."""
    unscored: int = field(init=False)
    """Pairs whose score has not come back yet."""
    scores: np.ndarray = field(init=False)
    """Raw scores, filled in as batches finish."""

    def __post_init__(self) -> None:
        self.order = sorted(range(len(self.pairs)), key=lambda i: -self.pairs[i].cost)
        self.unscored = len(self.pairs)
        self.scores = np.zeros(len(self.pairs), dtype=np.float64)

    @property
    def unscheduled(self) -> int:
        return len(self.order) - self.cursor


class MicroBatcher:
    """Forms each batch round-robin over the waiting requests, within a token budget and a pair cap."""

    def __init__(self, scorer: Scorer, budget: BatchBudget, max_queued_pairs: int, metrics: Metrics) -> None:
        self._scorer = scorer
        self._budget = budget
        self._max_queued = max_queued_pairs
        self._metrics = metrics
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._pairs_per_second = 0.0
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="rerank-model-worker", daemon=True)
        self._thread.start()

    @property
    def queued_pairs(self) -> int:
        return self._queued

    async def score(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        loop = asyncio.get_running_loop()
        job = _Job(pairs=pairs, loop=loop, future=loop.create_future())
        self._enqueue(job)
        try:
            return await job.future
        except asyncio.CancelledError:
            self._withdraw(job)
            raise

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            abandoned = list(self._jobs)
            dropped = sum(job.unscheduled for job in abandoned)
            self._jobs.clear()
            self._queued = 0
            self._metrics.queue_depth.set(0)
            self._cond.notify_all()
        self._metrics.pairs_dropped.inc(dropped)
        for job in abandoned:
            self._settle(job, SchedulerStopped("the sidecar is shutting down"))
        self._thread.join(timeout=60)

    def _enqueue(self, job: _Job) -> None:
        n = len(job.pairs)
        with self._cond:
            if self._stopping:
                raise SchedulerStopped("the sidecar is shutting down")
            if n > self._max_queued:
                raise RequestTooLarge(n, self._max_queued)
            if self._queued + n > self._max_queued:
                raise QueueFull(self._queued, self._max_queued, retry_after_seconds(self._queued, self._pairs_per_second))
            self._jobs.append(job)
            self._queued += n
            self._metrics.queue_depth.set(self._queued)
            self._cond.notify()

    def _withdraw(self, job: _Job) -> None:
        """Drops a cancelled request's pairs that no batch has taken yet."""
        with self._cond:
            dropped = job.unscheduled
            job.cursor = len(job.order)
            if job in self._jobs:
                self._jobs.remove(job)
            self._queued -= dropped
            self._metrics.queue_depth.set(self._queued)
        self._metrics.pairs_dropped.inc(dropped)

    def _take_batch(self) -> list[tuple[_Job, int]]:
        """One pair from each waiting request in turn until the budget is spent. Caller holds the lock."""
        batch: list[tuple[_Job, int]] = []
        longest = 0
        progressed = True
        while progressed:
            progressed = False
            for job in self._jobs:
                if job.unscheduled == 0:
                    continue
                index = job.order[job.cursor]
                cost = job.pairs[index].cost
                if not self._budget.admits(len(batch), longest, cost):
                    continue
                batch.append((job, index))
                longest = max(longest, cost)
                job.cursor += 1
                progressed = True
        self._jobs = deque(job for job in self._jobs if job.unscheduled > 0)
        self._queued -= len(batch)
        self._metrics.queue_depth.set(self._queued)
        self._metrics.batch_tokens.observe(longest * len(batch))
        return batch

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                batch = self._take_batch()
            self._run(batch)

    def _run(self, batch: list[tuple[_Job, int]]) -> None:
        jobs = {job for job, _ in batch}
        started = time.perf_counter()
        try:
            raw = self._scorer.score_batch([job.pairs[index] for job, index in batch])
        except Exception as exc:  # the model failed: every request in the batch gets the error
            self._metrics.pairs_dropped.inc(len(batch))  # unscored, like the requests' pairs still queued
            for job in jobs:
                self._withdraw(job)
                self._settle(job, exc)
            return
        elapsed = max(time.perf_counter() - started, 1e-6)
        self._pairs_per_second += _THROUGHPUT_SMOOTHING * (len(batch) / elapsed - self._pairs_per_second)
        self._metrics.batch_pairs.observe(len(batch))
        self._metrics.batch_requests.observe(len(jobs))
        self._metrics.pairs_scored.inc(len(batch))
        for (job, index), value in zip(batch, raw, strict=True):
            job.scores[index] = value
            job.unscored -= 1
            if job.unscored == 0:
                self._settle(job, job.scores)

    @staticmethod
    def _settle(job: _Job, outcome: np.ndarray | BaseException) -> None:
        """Resolves the job's future on its own event loop, unless it was cancelled meanwhile."""

        def resolve() -> None:
            if job.future.done():
                return
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)

        job.loop.call_soon_threadsafe(resolve)
