"""What every scheduler offers the engine, the token budget they share, and their refusals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..config import Settings
from ..models.base import EncodedPair

# A CPU scores fastest when a batch's activations stay in cache: on a 2-core EPYC, MiniLM-L6 went
# from 25 pairs/s at 16384 tokens per batch to 45 at 1024-2048 (torch and onnx alike). A GPU wants
# big batches to fill its cores.
DEFAULT_BATCH_TOKENS = {"cpu": 2048, "gpu": 16384}


class QueueFull(RuntimeError):
    """The queue bound would be passed; the client should retry after `retry_after_s`."""

    def __init__(self, queued: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the scoring queue is full ({queued} pairs queued, limit {limit}, RERANK_MAX_QUEUED_PAIRS); "
            f"retry after {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


class RequestTooLarge(ValueError):
    """One request holds more pairs than the whole queue may; retrying cannot help."""

    def __init__(self, pairs: int, limit: int) -> None:
        super().__init__(
            f"the request needs {pairs} pairs (documents x chunks) but the queue holds at most {limit} "
            "(RERANK_MAX_QUEUED_PAIRS); send fewer documents per request"
        )


class SchedulerStopped(RuntimeError):
    """The sidecar is shutting down and accepts no new work."""


@dataclass(frozen=True, slots=True)
class BatchBudget:
    """Limits of one forward pass."""

    max_tokens: int
    """Padded tokens (longest pair x pairs) one batch may hold."""
    max_pairs: int
    """Pairs one batch may hold."""

    @classmethod
    def for_device(cls, settings: Settings, device: str) -> BatchBudget:
        """The budget of `settings`, with RERANK_MAX_BATCH_TOKENS=0 resolved for the scorer's device."""
        default = DEFAULT_BATCH_TOKENS["cpu" if device == "cpu" else "gpu"]
        return cls(settings.max_batch_tokens or default, settings.max_batch_pairs)

    def admits(self, size: int, longest: int, cost: int) -> bool:
        """Whether a batch of `size` pairs whose longest has `longest` tokens can take a pair of `cost` tokens."""
        if size == 0:
            return True  # a pair longer than the budget still gets a batch of its own
        return size < self.max_pairs and max(longest, cost) * (size + 1) <= self.max_tokens

    def plan(self, costs: Sequence[int]) -> list[list[int]]:
        """Indexes of `costs` in batches within the budget, longest first so each batch pads little."""
        order = sorted(range(len(costs)), key=lambda i: -costs[i])
        batches: list[list[int]] = []
        longest = 0
        for index in order:
            if not batches or not self.admits(len(batches[-1]), longest, costs[index]):
                batches.append([])
                longest = 0
            batches[-1].append(index)
            longest = max(longest, costs[index])
        return batches


def retry_after_seconds(queued_pairs: int, pairs_per_second: float) -> int:
    """Seconds until the current queue has likely drained, between 1 and 60."""
    if pairs_per_second <= 0:
        return 1
    return int(min(60, max(1, math.ceil(queued_pairs / pairs_per_second))))


class Scheduler(Protocol):
    """Scores pairs on the model's one worker thread; cancelling the awaiting task drops pending pairs."""

    async def score(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        """Raw scores of `pairs`, in their order."""
        ...

    @property
    def queued_pairs(self) -> int:
        """Pairs accepted but not yet handed to the model."""
        ...

    def stop(self) -> None:
        """Finishes the batch in flight, fails what is queued, and ends the worker thread."""
        ...
