"""What every model's scheduler shares: one forward pass at a time, in turn, and one queue bound across models."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from .errors import QueueFull, RequestTooLarge


class HoldsQueue(Protocol):
    """A scheduler, as far as the queue bound sees it."""

    @property
    def queued_pairs(self) -> int:
        """Pairs accepted but not yet handed to the model."""
        ...


class SharedCompute:
    """The CPU or GPU all loaded models share.

    `turn()` admits one forward pass at a time, in the order the models' worker threads ask (a
    ticket lock): two models never run their intra-op thread pools at once, and a model whose worker
    always has a batch ready cannot starve another, which gets the very next turn. `admit` is the one
    queue bound: it holds the pairs queued for all models together within RERANK_MAX_QUEUED_PAIRS.
    """

    def __init__(self, max_queued_pairs: int) -> None:
        self.max_queued_pairs = max_queued_pairs
        self._turns = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._queues: list[HoldsQueue] = []

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Holds the compute for one forward pass; waits for every pass asked for before it."""
        with self._turns:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._turns.wait()
        try:
            yield
        finally:
            with self._turns:
                self._serving += 1
                self._turns.notify_all()

    def count_queue(self, scheduler: HoldsQueue) -> None:
        """Counts a scheduler's queue toward the bound until `stop_counting`."""
        self._queues.append(scheduler)

    def stop_counting(self, scheduler: HoldsQueue) -> None:
        """Forgets a stopped scheduler, so nothing here keeps it (and its model) alive."""
        if scheduler in self._queues:
            self._queues.remove(scheduler)

    def admit(self, pairs: int, pairs_per_second: float) -> None:
        """RequestTooLarge when `pairs` could never fit the bound; QueueFull when the models' queues together
        have no room for them now, with a Retry-After from the asking scheduler's throughput (`pairs_per_second`)."""
        if pairs > self.max_queued_pairs:
            raise RequestTooLarge(pairs, self.max_queued_pairs)
        queued = sum(scheduler.queued_pairs for scheduler in tuple(self._queues))
        if queued + pairs > self.max_queued_pairs:
            raise QueueFull(queued, self.max_queued_pairs, retry_after_seconds(queued, pairs_per_second))


def retry_after_seconds(queued_pairs: int, pairs_per_second: float) -> int:
    """Seconds until the current queue has likely drained, between 1 and 60."""
    if pairs_per_second <= 0:
        return 1
    return int(min(60, max(1, math.ceil(queued_pairs / pairs_per_second))))
