"""The one-lock scheduler kept for A/B comparison: each request is scored whole, one after another."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..metrics import ModelMetrics
from ..models.base import EncodedPair, Scorer
from .compute import SharedCompute
from .errors import SchedulerStopped
from .scheduler import BatchBudget, check_admission


class SerialScheduler:
    """One asyncio.Lock around the model: a request waits for every request before it to finish."""

    def __init__(
        self,
        scorer: Scorer,
        budget: BatchBudget,
        max_queued_pairs: int,
        metrics: ModelMetrics,
        compute: SharedCompute | None = None,
    ) -> None:
        """`compute` is shared with the other loaded models' schedulers (None: a model alone)."""
        self._scorer = scorer
        self._compute = compute or SharedCompute(max_queued_pairs)
        self._budget = budget
        self._max_queued = max_queued_pairs
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank-model-worker")
        self._queued = 0
        self._stopping = False

    @property
    def queued_pairs(self) -> int:
        return self._queued

    async def score(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        n = len(pairs)
        if self._stopping:
            raise SchedulerStopped("the sidecar is shutting down")
        check_admission(n, self._queued, self._max_queued, 0)
        self._queued += n
        self._metrics.queue_depth.set(self._queued)
        handed_over = False
        try:
            async with self._lock:
                self._queued -= n
                handed_over = True
                self._metrics.queue_depth.set(self._queued)
                return await asyncio.get_running_loop().run_in_executor(self._worker, self._score_whole, pairs)
        finally:
            if not handed_over:  # cancelled while waiting for the lock: nothing was scored
                self._queued -= n
                self._metrics.queue_depth.set(self._queued)
                self._metrics.pairs_dropped.inc(n)

    def stop(self) -> None:
        self._stopping = True
        self._worker.shutdown(wait=True)

    def _score_whole(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        """Scores one request in length-sorted batches within the budget."""
        scores = np.zeros(len(pairs), dtype=np.float64)
        for chunk in self._budget.plan([pair.cost for pair in pairs], [pair.prefix for pair in pairs]):
            with self._compute.turn():
                started = time.perf_counter()
                scores[chunk] = self._scorer.score_batch([pairs[i] for i in chunk])
            self._metrics.batch_seconds.observe(time.perf_counter() - started)
            self._metrics.batch_pairs.observe(len(chunk))
            self._metrics.batch_requests.observe(1)
            self._metrics.batch_tokens.observe(max(pairs[i].cost for i in chunk) * len(chunk))
            self._metrics.pairs_scored.inc(len(chunk))
        return scores
