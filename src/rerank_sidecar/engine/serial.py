"""The one-lock scheduler kept for A/B comparison: each request is scored whole, one after another."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..config import Task
from ..metrics import ModelMetrics
from ..models.base import EncodedPair, Scorer
from .budget import BatchBudget
from .compute import SharedCompute
from .errors import SchedulerStopped
from .scheduler import SHUTTING_DOWN, Scheduler, task_outputs


class SerialScheduler(Scheduler):
    """One asyncio.Lock around the model: a request waits for every request before it to finish."""

    def __init__(self, scorer: Scorer, budget: BatchBudget, metrics: ModelMetrics, compute: SharedCompute) -> None:
        super().__init__(scorer, budget, metrics, compute)
        self._lock = asyncio.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rerank-model-worker")

    async def run(self, pairs: Sequence[EncodedPair], task: Task) -> np.ndarray:
        n = len(pairs)
        self._admit(n)
        queued = True
        try:
            async with self._lock:
                if self._stopping:  # stop() came while this request waited: only the one in flight finishes
                    raise SchedulerStopped(SHUTTING_DOWN)
                self._count_queued(-n)
                queued = False
                return await asyncio.get_running_loop().run_in_executor(self._worker, self._run_whole, pairs, task)
        finally:
            if queued:  # cancelled or stopped while waiting for the lock: nothing was scored
                self._count_queued(-n)
                self._metrics.pairs_dropped.inc(n)

    def stop(self) -> None:
        """Finishes the request in flight; each queued one fails with SchedulerStopped as it gets the lock."""
        self._stopping = True
        self._compute.stop_counting(self)
        self._worker.shutdown(wait=True)

    def _run_whole(self, pairs: Sequence[EncodedPair], task: Task) -> np.ndarray:
        """Runs one request in length-sorted batches within the budget."""
        outputs: np.ndarray | None = None
        for chunk in self._budget.plan_pairs(pairs):
            part = task_outputs(self._run_pass([pairs[i] for i in chunk], requests=1), task)
            if outputs is None:
                outputs = np.zeros((len(pairs), *part.shape[1:]), dtype=part.dtype)
            outputs[chunk] = part
        return outputs if outputs is not None else np.zeros(0, dtype=np.float64)
