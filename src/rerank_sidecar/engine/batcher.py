"""Micro-batching scheduler: concurrent requests share forward passes in length-sorted rounds, fewest-left first."""

from __future__ import annotations

import asyncio
import bisect
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..config import Task
from ..metrics import ModelMetrics
from ..models.base import EncodedPair, PassOutput, Scorer
from .budget import BatchBudget
from .compute import SharedCompute
from .errors import SchedulerStopped
from .scheduler import SHUTTING_DOWN, Scheduler, task_outputs

_Slot = tuple["_PendingRequest", int]
"""One pair of a round: its request, and its index in the request."""
_Taken = Literal["all taken", "round full", "embedding share full"]
"""Why a round stopped taking one request's pairs."""


@dataclass(eq=False)
class _PendingRequest:
    """One request's pairs (rerank pairs, or embedding texts) on their way through the queue."""

    pairs: Sequence[EncodedPair]
    """The request's pairs, in the request's order."""
    task: Task
    """What the request wants of each pair: its raw score (rerank) or its vector (embed)."""
    loop: asyncio.AbstractEventLoop
    """The event loop awaiting the result."""
    future: asyncio.Future[np.ndarray]
    """Resolved with every pair's output once the last pair is run."""
    order: list[int] = field(init=False)
    """Pair indices longest first, so consecutive batches of one request pad little."""
    cursor: int = 0
    """How many of `order` have been taken into a round."""
    withdrawn: bool = False
    """The request was cancelled or failed: its pairs still waiting in a round are skipped."""
    unscored: int = field(init=False)
    """Pairs whose output has not come back yet."""
    outputs: np.ndarray | None = None
    """Raw scores (pairs) or vectors (pairs x dimensions), filled in as batches finish; made by the first."""

    def __post_init__(self) -> None:
        self.order = sorted(range(len(self.pairs)), key=lambda i: -self.pairs[i].cost)
        self.unscored = len(self.pairs)

    def store(self, index: int, output: PassOutput, row: int) -> None:
        """Keeps what the pass gave row `row`, this request's pair `index`."""
        part = task_outputs(output, self.task)
        if self.outputs is None:
            self.outputs = np.zeros((len(self.pairs), *part.shape[1:]), dtype=part.dtype)
        self.outputs[index] = part[row]
        self.unscored -= 1

    @property
    def unscheduled(self) -> int:
        return len(self.order) - self.cursor

    @property
    def prefix_pass(self) -> int:
        """Tokens of the shared-prefix pass the batch holding this request's next pair runs (0: none, or run)."""
        prefix = self.pairs[0].prefix if self.pairs else None
        return prefix.pass_tokens if prefix is not None else 0

    @property
    def next_cost(self) -> int:
        """The cost of the pair `take` returns next."""
        return self.pairs[self.order[self.cursor]].cost

    def take(self) -> _Slot:
        """The next (longest) pair not yet in a round."""
        self.cursor += 1
        return self, self.order[self.cursor - 1]


class MicroBatcher(Scheduler):
    """Runs the waiting requests in rounds (rerank and embedding requests alike, sharing passes): the fewest-left requests first, sorted by length, cut into batches.

    A round holds one batch budget of pairs (padded work and pair cap): the oldest request's fair share
    and then whole requests, fewest pairs left first, so a small request gets into the next round
    beside a big one, and requests finish one after another. It sorts what it took by length
    before cutting it into passes where lengths jump, so pairs of different requests pad little.

    A request that arrives while a round is in progress waits for at most the rest of that round,
    one batch budget of work. Measured in-process on the 2-core EPYC (MiniLM-L6 shape, int8, DL20
    pairs), rounds of one budget against rounds of 8 and against whole newcomers put ahead of the
    round ("express" batches): W3's small requests p99 348 / 775 / 681 ms, W2 208 / 235 / 172
    pairs/s with p99 1.13 / 1.78 / 1.95x the Little's-law mean. Express batches padded 1.34x,
    since a request's pairs of all lengths share one pass; rounds sorted across requests pad 1.02x.
    Holding a round to padded work instead of unpadded tokens padded the same (within 0.1%) and moved
    W1/W2/W3 pairs/s and p99 by no more than the noise of a shared 2-core machine (A/B of issue #22).
    """

    def __init__(self, scorer: Scorer, budget: BatchBudget, metrics: ModelMetrics, compute: SharedCompute) -> None:
        super().__init__(scorer, budget, metrics, compute)
        self._requests: deque[_PendingRequest] = deque()
        self._round: deque[list[_Slot]] = deque()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._work, name="rerank-model-worker", daemon=True)
        self._thread.start()

    async def run(self, pairs: Sequence[EncodedPair], task: Task) -> np.ndarray:
        if not pairs:
            return np.zeros(0, dtype=np.float64)
        loop = asyncio.get_running_loop()
        request = _PendingRequest(pairs=pairs, task=task, loop=loop, future=loop.create_future())
        self._enqueue(request)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            waiting = set(self._requests) | {request for batch in self._round for request, _ in batch}
            abandoned = {request for request in waiting if not request.withdrawn}  # a withdrawn one's caller is gone
            self._requests.clear()
            self._round.clear()
            self._metrics.pairs_dropped.inc(self._queued)
            self._count_queued(-self._queued)
            self._compute.stop_counting(self)
            self._cond.notify_all()
        for request in abandoned:
            self._settle(request, SchedulerStopped(SHUTTING_DOWN))
        self._thread.join(timeout=60)

    def _enqueue(self, request: _PendingRequest) -> None:
        with self._cond:
            self._admit(len(request.pairs))
            self._requests.append(request)
            self._cond.notify()

    def _withdraw(self, request: _PendingRequest) -> None:
        """Drops a cancelled request's pairs that no round has taken; those in the round are skipped there."""
        with self._cond:
            dropped = request.unscheduled
            request.cursor = len(request.order)
            request.withdrawn = True
            if request in self._requests:
                self._requests.remove(request)
            self._count_queued(-dropped)
        self._metrics.pairs_dropped.inc(dropped)

    def _take_round(self) -> None:
        """Fills `_round` with the next round's batches. Caller holds the lock; at least one request waits."""
        slots = self._take_shortest_first()
        self._requests = deque(request for request in self._requests if request.unscheduled > 0)
        plan = self._budget.plan_pairs([request.pairs[index] for request, index in slots])
        self._round.extend([slots[i] for i in batch] for batch in plan)

    def _take_shortest_first(self) -> list[_Slot]:
        """The oldest request's fair share of one batch budget, then the requests with the fewest pairs left.

        A round holds one budget of padded work: its pairs, longest first, cut into batches as the
        budget admits them, pad to at most `max_tokens` tokens in all (BatchBudget.padded_work, plus
        the passes of shared prefixes not yet run, as the planner charges them), and it holds at most
        `max_pairs` pairs; it closes at the first pair that would pass either, and a first pair longer
        than the budget still makes a round. Fewest-left-first finishes requests
        one after another rather than all at the end of a shared round, so each request's HTTP and
        tokenization work overlaps the model's work on the next (on an H200, warm, MiniLM-L6 shape:
        W1 1677 pairs/s against 1360 for rounds of one pair from each request in turn), and a small
        request overtakes a big one. The oldest request's share (its part of the budget's tokens and
        pairs) keeps a big one moving under a stream of small ones; a request waiting alone gets the
        whole budget.

        While rerank pairs wait, embedding texts beyond the oldest request's share take at most
        `max_embed_tokens` of the round (at least one text): one-text embedding requests, always fewest
        left, would otherwise fill every round first. 32 clients embedding one query each beside W1
        reranking (embedded default, 2-core EPYC, issue #21) left reranking 0.63-0.65x of its pairs/s
        alone with no bound, 0.71-0.75x with a tenth of the budget and 0.92-1.00x with a twentieth (the
        default); the embedding clients then got 55-64 texts/s (p50 0.50-0.58 s) instead of 178-197.
        """
        budget = self._budget
        slots: list[_Slot] = []
        costs: list[int] = []  # the round's, shortest first
        embed_costs: list[int] = []  # the round's embedding texts', shortest first
        prefix_work = 0  # tokens of the shared-prefix passes the round runs, charged as the planner charges them
        charged: set[_PendingRequest] = set()  # requests whose prefix pass is in `prefix_work`

        def with_cost(sorted_costs: list[int], cost: int) -> tuple[list[int], int]:
            """`sorted_costs` with `cost` added, and their padded work."""
            added = sorted_costs.copy()
            bisect.insort(added, cost)
            return added, budget.padded_work(added[::-1])

        def take_from(request: _PendingRequest, max_tokens: int, max_pairs: int, max_embed_tokens: int) -> _Taken:
            """Takes the request's pairs while the round stays within these limits; says which one stopped it."""
            nonlocal prefix_work
            prefix_pass = 0 if request in charged else request.prefix_pass
            embedding = request.task == "embed"
            while request.unscheduled:
                with_next, work = with_cost(costs, request.next_cost)
                if slots and (len(slots) >= max_pairs or work + prefix_work + prefix_pass > max_tokens):
                    return "round full"
                if embedding:
                    embed_next, embed_work = with_cost(embed_costs, request.next_cost)
                    if embed_costs and embed_work > max_embed_tokens:
                        return "embedding share full"
                    embed_costs[:] = embed_next
                costs[:] = with_next
                slots.append(request.take())
                prefix_work, prefix_pass = prefix_work + prefix_pass, 0
                charged.add(request)
            return "all taken"

        waiting = len(self._requests)
        take_from(self._requests[0], budget.max_tokens // waiting, max(1, budget.max_pairs // waiting), budget.max_tokens)
        reranking = any(request.task == "rerank" for request in self._requests)
        max_embed_tokens = budget.max_embed_tokens if reranking else budget.max_tokens
        for request in sorted(self._requests, key=lambda request: request.unscheduled):  # stable: ties oldest first
            if take_from(request, budget.max_tokens, budget.max_pairs, max_embed_tokens) == "round full":
                break
        return slots

    def _next_batch(self) -> list[_Slot]:
        """The round's next batch without withdrawn requests' pairs, counted off the queue. Caller holds the lock."""
        batch = self._round.popleft()
        kept = [slot for slot in batch if not slot[0].withdrawn]
        self._metrics.pairs_dropped.inc(len(batch) - len(kept))
        self._count_queued(-len(batch))
        return kept

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._round and not self._requests and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                if not self._round:
                    self._take_round()
                batch = self._next_batch()
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Slot]) -> None:
        requests = {request for request, _ in batch}
        try:
            output = self._run_pass([request.pairs[index] for request, index in batch], len(requests))
        except Exception as exc:  # the model failed: every request in the batch gets the error
            self._metrics.pairs_dropped.inc(len(batch))  # unscored, like the requests' pairs still queued
            for request in requests:
                self._withdraw(request)
                self._settle(request, exc)
            return
        for row, (request, index) in enumerate(batch):
            request.store(index, output, row)
            if request.unscored == 0:
                assert request.outputs is not None
                self._settle(request, request.outputs)

    @staticmethod
    def _settle(request: _PendingRequest, outcome: np.ndarray | BaseException) -> None:
        """Resolves the request's future on its own event loop, unless it was cancelled meanwhile."""

        def resolve() -> None:
            if request.future.done():
                return
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
            else:
                request.future.set_result(outcome)

        request.loop.call_soon_threadsafe(resolve)
