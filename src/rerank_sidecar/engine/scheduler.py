"""What both schedulers share: the engine's view of them, admission to the queue, and one forward pass's bookkeeping."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from ..config import Task
from ..metrics import ModelMetrics
from ..models.base import EncodedPair, PassOutput, Scorer
from .budget import BatchBudget, padded_tokens
from .compute import SharedCompute
from .errors import SchedulerStopped

# Weight of the newest batch in the moving average of throughput used for Retry-After.
THROUGHPUT_SMOOTHING = 0.2
SHUTTING_DOWN = "the sidecar is shutting down"


class Scheduler(ABC):
    """Runs pairs (rerank pairs, embedding texts) on the model's one worker thread; cancelling drops pending ones.

    Counts its queue toward `compute`'s one bound from construction until `stop`.
    """

    def __init__(self, scorer: Scorer, budget: BatchBudget, metrics: ModelMetrics, compute: SharedCompute) -> None:
        """`compute` is shared with the other loaded models' schedulers."""
        self._scorer = scorer
        self._budget = budget
        self._metrics = metrics
        self._compute = compute
        self._queued = 0
        self._pairs_per_second = 0.0
        self._stopping = False
        compute.count_queue(self)

    @property
    def queued_pairs(self) -> int:
        """Pairs accepted but not yet handed to the model."""
        return self._queued

    async def score(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        """Raw scores of `pairs` (rerank pairs), in their order."""
        return await self.run(pairs, "rerank")

    async def embed(self, texts: Sequence[EncodedPair]) -> np.ndarray:
        """Pooled, unnormalized vectors of `texts` (embedding texts), one row each, in their order."""
        return await self.run(texts, "embed")

    @abstractmethod
    async def run(self, pairs: Sequence[EncodedPair], task: Task) -> np.ndarray:
        """What `task` asks of each of `pairs`, in their order: raw scores (rerank) or vectors (embed)."""

    @abstractmethod
    def stop(self) -> None:
        """Finishes the batch in flight, fails what is queued, and ends the worker thread."""

    def _admit(self, pairs: int) -> None:
        """Counts `pairs` into the queue, or refuses them: SchedulerStopped, RequestTooLarge or QueueFull."""
        if self._stopping:
            raise SchedulerStopped(SHUTTING_DOWN)
        self._compute.admit(pairs, self._pairs_per_second)
        self._count_queued(pairs)

    def _count_queued(self, change: int) -> None:
        """Adds `change` (negative: pairs leaving) to the queue and its gauge."""
        self._queued += change
        self._metrics.queue_depth.set(self._queued)

    def _run_pass(self, pairs: Sequence[EncodedPair], requests: int) -> PassOutput:
        """One forward pass over `pairs` (from `requests` requests, rerank and embedding ones), in the compute's turn."""
        with self._compute.turn():
            started = time.perf_counter()
            output = self._scorer.run_pass(pairs)
        elapsed = max(time.perf_counter() - started, 1e-6)
        self._metrics.batch_seconds.observe(elapsed)
        self._metrics.batch_pairs.observe(len(pairs))
        self._metrics.batch_requests.observe(requests)
        self._metrics.batch_tokens.observe(padded_tokens([pair.cost for pair in pairs]))
        self._metrics.pairs_scored.inc(len(pairs))
        self._pairs_per_second += THROUGHPUT_SMOOTHING * (len(pairs) / elapsed - self._pairs_per_second)
        return output


def task_outputs(output: PassOutput, task: Task) -> np.ndarray:
    """The part of a pass's output a request of `task` wants: its raw scores, or its vectors."""
    if task == "rerank":
        return output.scores
    assert output.vectors is not None, "an embedding text reached a model that cannot embed"
    return output.vectors
