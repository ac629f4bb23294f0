"""What every model's scheduler shares: one forward pass at a time, in turn, and one queue bound across models."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .errors import QueueFull
from .scheduler import retry_after_seconds


class SharedCompute:
    """The CPU or GPU all loaded models share.

    `turn()` admits one forward pass at a time, in the order the models' worker threads ask (a
    ticket lock): two models never run their intra-op thread pools at once, and a model whose worker
    always has a batch ready cannot starve another, which gets the very next turn. `check_room`
    holds the pairs queued for all models together within RERANK_MAX_QUEUED_PAIRS; each model's own
    queue is bounded by its scheduler, which also knows its throughput for Retry-After.
    """

    def __init__(self, max_queued_pairs: int) -> None:
        self.max_queued_pairs = max_queued_pairs
        self._turns = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._queues: list[Callable[[], int]] = []

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

    def count_queue(self, queued_pairs: Callable[[], int]) -> None:
        """Counts one model's queue toward the shared bound."""
        self._queues.append(queued_pairs)

    def check_room(self, pairs: int, own_queued: int) -> None:
        """QueueFull when `pairs` more would take the models' queues together past the bound, though the asking
        model's own queue (`own_queued`, which its scheduler bounds) has room for them."""
        queued = sum(queue() for queue in self._queues)
        if queued + pairs > self.max_queued_pairs and own_queued + pairs <= self.max_queued_pairs:
            raise QueueFull(queued, self.max_queued_pairs, retry_after_seconds(queued, 0))
