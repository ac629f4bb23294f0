"""Micro-batching scheduler: concurrent requests share forward passes in length-sorted rounds, fewest-left first."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..metrics import ModelMetrics
from ..models.base import EncodedPair, Scorer
from .compute import SharedCompute
from .errors import QueueFull, RequestTooLarge, SchedulerStopped
from .scheduler import BatchBudget, retry_after_seconds

# Weight of the newest batch in the moving average of throughput used for Retry-After.
_THROUGHPUT_SMOOTHING = 0.2

# A round sorts about this many tokens of pairs across requests before cutting them into batches:
# enough to sort a full queue of small requests by length (W2: 32 requests x 5 pairs of about 100
# tokens), so its batches pad little (on a 2-core EPYC, MiniLM-L6 scored W2's pairs at 44 pairs/s
# sorted as one round, 29 in batches mixed across requests). That is 8 batches of the CPU budget and
# one of a GPU's: a GPU batch holds that many pairs already, and a bigger round only makes requests
# arriving meanwhile wait longer.
_ROUND_TOKENS = 16384

_Slot = tuple["_Job", int]
"""One pair of a round: its request, and its index in the request."""


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
    """How many of `order` have been taken into a round."""
    withdrawn: bool = False
    """The request was cancelled or failed: its pairs still waiting in a round are skipped."""
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

    @property
    def unscheduled_tokens(self) -> int:
        """Tokens of the pairs not yet in a round."""
        return sum(self.pairs[index].cost for index in self.order[self.cursor :])

    def take(self) -> _Slot:
        """The next (longest) pair not yet in a round."""
        self.cursor += 1
        return self, self.order[self.cursor - 1]


class MicroBatcher:
    """Scores the waiting requests in rounds: the fewest-left requests first, sorted by length, cut into batches.

    A round takes the oldest request's fair share and then whole requests, fewest pairs left
    first, so a small request gets into the next round beside a big one, and requests finish one
    after another. It sorts what it took by length before cutting it into batches within the token
    budget and pair cap, so pairs of different requests pad little.
    """

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
        self._jobs: deque[_Job] = deque()
        self._round: deque[list[_Slot]] = deque()
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
            waiting = set(self._jobs) | {job for batch in self._round for job, _ in batch}
            abandoned = {job for job in waiting if not job.withdrawn}  # a withdrawn one's caller is gone
            self._jobs.clear()
            self._round.clear()
            dropped, self._queued = self._queued, 0
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
        """Drops a cancelled request's pairs that no round has taken; those in the round are skipped there."""
        with self._cond:
            dropped = job.unscheduled
            job.cursor = len(job.order)
            job.withdrawn = True
            if job in self._jobs:
                self._jobs.remove(job)
            self._queued -= dropped
            self._metrics.queue_depth.set(self._queued)
        self._metrics.pairs_dropped.inc(dropped)

    def _take_round(self) -> None:
        """Fills `_round` with the next round's batches. Caller holds the lock; at least one request waits."""
        self._jobs = deque(job for job in self._jobs if job.unscheduled > 0)
        if len(self._jobs) == 1:
            slots = self._take_alone(self._jobs[0])
        else:
            slots = self._take_shortest_first()
        plan = self._budget.plan([job.pairs[index].cost for job, index in slots])
        self._round.extend([slots[i] for i in batch] for batch in plan)

    def _take_alone(self, job: _Job) -> list[_Slot]:
        """One batch's worth of a request waiting alone: its pairs are sorted already; more would gain nothing."""
        slots = [job.take()]
        longest = job.pairs[slots[0][1]].cost
        while job.unscheduled and self._budget.admits(len(slots), longest, job.pairs[job.order[job.cursor]].cost):
            slots.append(job.take())
        return slots

    def _take_shortest_first(self) -> list[_Slot]:
        """The oldest request's fair share of the round (at most a batch), then the requests with the fewest pairs left.

        Fewest-left-first finishes requests one after another rather than all at the end of a
        shared round, so each request's HTTP and tokenization work overlaps the model's work on the
        next (on an H200, warm, MiniLM-L6 shape: W1 1677 pairs/s against 1360 for rounds of one pair
        from each request in turn), and a small request overtakes a big one. The oldest request's
        share keeps a big one moving under a stream of small ones. The last request, where it does
        not fit whole, only tops the round up to one batch's worth of tokens; its rest goes in
        rounds of its own, which requests arriving meanwhile can join.
        """
        batches = max(1, _ROUND_TOKENS // self._budget.max_tokens)
        round_tokens, round_pairs = batches * self._budget.max_tokens, batches * self._budget.max_pairs
        slots: list[_Slot] = []
        tokens = 0

        def take_from(job: _Job, token_limit: int) -> None:
            nonlocal tokens
            while job.unscheduled and tokens < token_limit and len(slots) < round_pairs:
                slots.append(job.take())
                tokens += job.pairs[slots[-1][1]].cost

        take_from(self._jobs[0], min(round_tokens // len(self._jobs), self._budget.max_tokens))
        fewest_left = sorted(self._jobs, key=lambda job: job.unscheduled)  # stable: ties go oldest first
        for position, job in enumerate(fewest_left):
            alone = not any(later.unscheduled for later in fewest_left[position + 1 :])
            if alone and job.unscheduled_tokens > round_tokens - tokens:
                take_from(job, self._budget.max_tokens)
            else:
                take_from(job, round_tokens)
        return slots

    def _next_batch(self) -> list[_Slot]:
        """The next batch without withdrawn requests' pairs, counted off the queue. Caller holds the lock."""
        batch = self._form_batch()
        kept = [slot for slot in batch if not slot[0].withdrawn]
        self._metrics.pairs_dropped.inc(len(batch) - len(kept))
        self._queued -= len(batch)
        self._metrics.queue_depth.set(self._queued)
        if kept:
            self._metrics.batch_tokens.observe(max(job.pairs[index].cost for job, index in kept) * len(kept))
        return kept

    def _form_batch(self) -> list[_Slot]:
        """The round's next batch; or, when requests arrived while others were being scored, theirs.

        A request that arrives while a round is in progress does not wait for the round: it goes
        into the next batch formed (whole requests, fewest pairs first, up to half a batch), topped
        up with the round's pairs that pad least, so the round keeps moving too.
        """
        newcomers = [job for job in self._jobs if job.cursor == 0]
        busy = bool(self._round) or any(job.cursor > 0 for job in self._jobs)
        express = self._take_newcomers(newcomers) if newcomers and busy else []
        if not self._round and any(job.unscheduled for job in self._jobs):
            self._take_round()
        self._jobs = deque(job for job in self._jobs if job.unscheduled > 0)
        if not express:
            return self._round.popleft()
        return express + self._top_up(express)

    def _take_newcomers(self, newcomers: list[_Job]) -> list[_Slot]:
        """Newly arrived requests whole, fewest pairs first, while they fit in half a batch; or, when not
        even the first fits, half a batch of it. A request split here would wait for the round for its rest."""
        half = BatchBudget(max(1, self._budget.max_tokens // 2), max(1, self._budget.max_pairs // 2))
        slots: list[_Slot] = []
        longest = 0
        for job in sorted(newcomers, key=lambda job: len(job.pairs)):
            fits = len(slots) + len(job.pairs) <= half.max_pairs and (
                max(longest, job.pairs[job.order[0]].cost) * (len(slots) + len(job.pairs)) <= half.max_tokens
            )
            if not fits and slots:
                break
            while job.unscheduled and half.admits(len(slots), longest, job.pairs[job.order[job.cursor]].cost):
                slots.append(job.take())
                longest = max(longest, job.pairs[slots[-1][1]].cost)
        return slots

    def _top_up(self, batch: list[_Slot]) -> list[_Slot]:
        """Takes the round's pairs that fit beside `batch` out of the round: the longest of those no longer
        than its longest first (no extra padding), then the shortest of the rest. The round is re-cut."""
        longest = max(job.pairs[index].cost for job, index in batch)
        remaining = [slot for round_batch in self._round for slot in round_batch]
        cost = {id(slot): slot[0].pairs[slot[1]].cost for slot in remaining}
        shorter = sorted((slot for slot in remaining if cost[id(slot)] <= longest), key=lambda s: -cost[id(s)])
        longer = sorted((slot for slot in remaining if cost[id(slot)] > longest), key=lambda s: cost[id(s)])
        taken: list[_Slot] = []
        for slot in shorter + longer:
            if not self._budget.admits(len(batch) + len(taken), longest, cost[id(slot)]):
                break
            taken.append(slot)
            longest = max(longest, cost[id(slot)])
        chosen = {id(slot) for slot in taken}
        rest = [slot for slot in remaining if id(slot) not in chosen]
        self._round = deque([rest[i] for i in plan] for plan in self._budget.plan([cost[id(slot)] for slot in rest]))
        return taken

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._round and not self._jobs and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                batch = self._next_batch()
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Slot]) -> None:
        jobs = {job for job, _ in batch}
        try:
            with self._compute.turn():
                started = time.perf_counter()
                raw = self._scorer.score_batch([job.pairs[index] for job, index in batch])
        except Exception as exc:  # the model failed: every request in the batch gets the error
            self._metrics.pairs_dropped.inc(len(batch))  # unscored, like the requests' pairs still queued
            for job in jobs:
                self._withdraw(job)
                self._settle(job, exc)
            return
        elapsed = max(time.perf_counter() - started, 1e-6)
        self._metrics.batch_seconds.observe(elapsed)
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
