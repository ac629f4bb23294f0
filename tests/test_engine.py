"""The micro-batching engine on the embedded model, in-process: sharing, order, backpressure, cancel, cache."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from rerank_sidecar.config import Settings
from rerank_sidecar.engine.batcher import MicroBatcher
from rerank_sidecar.engine.engine import Engine, RerankJob
from rerank_sidecar.engine.scheduler import BatchBudget, QueueFull, RequestTooLarge
from rerank_sidecar.engine.serial import SerialScheduler
from rerank_sidecar.metrics import Metrics
from rerank_sidecar.models.base import EncodedPair, Scorer
from rerank_sidecar.models.registry import load_scorer


class RecordingScorer(Scorer):
    """The real scorer, with every batch it is handed written down (and optionally held at a gate)."""

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.info = inner.info
        self.calibration = inner.calibration
        self.batches: list[list[EncodedPair]] = []
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner.encode(*args, **kwargs)

    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        self.gate.wait(30)
        self.batches.append(list(pairs))
        return self.inner.score_batch(pairs)


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return load_scorer(Settings(threads=2))


@pytest.fixture
def recording(scorer: Scorer) -> RecordingScorer:
    return RecordingScorer(scorer)


@pytest.fixture(scope="module")
def passages(trec_dir) -> list[str]:
    from rerank_sidecar.bench.trec import load_benchmark

    benchmark = load_benchmark(trec_dir)
    return [candidate.text for topic in benchmark.topics[:3] for candidate in topic.candidates]


@pytest.fixture
def batcher(recording: RecordingScorer) -> Iterator[MicroBatcher]:
    scheduler = MicroBatcher(recording, BatchBudget(max_tokens=4096, max_pairs=16), 5000, Metrics())
    yield scheduler
    scheduler.stop()


def pairs_for(scorer: Scorer, query: str, documents: list[str]) -> list[EncodedPair]:
    return [document.windows[0] for document in scorer.encode(query, documents, None, "truncate", 1)]


def test_concurrent_requests_share_forward_passes_and_keep_their_order(
    batcher: MicroBatcher, recording: RecordingScorer, passages: list[str]
) -> None:
    queries = ["what is the capital of france", "how do vaccines work", "symptoms of flu"]
    requests = [pairs_for(recording, query, passages[i * 5 : i * 5 + 5]) for i, query in enumerate(queries)]
    big = pairs_for(recording, "history of rome", passages[:120])
    alone = [recording.inner.score_batch(pairs) for pairs in [*requests, big]]

    async def run() -> list[np.ndarray]:
        recording.gate.clear()  # hold the worker so every request is queued before the first batch forms
        tasks = [asyncio.ensure_future(batcher.score(pairs)) for pairs in [big, *requests]]
        await asyncio.sleep(0.2)
        recording.gate.set()
        return await asyncio.gather(*tasks)

    big_scores, *small_scores = asyncio.run(run())
    for got, expected in zip([*small_scores, big_scores], alone, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # Round-robin: every small request is finished by the first batch after the gate opens, beside the big one.
    later = recording.batches[1]
    owners = {pair.query_ids for pair in later}
    assert len(owners) == 4, f"{len(owners)} requests in the batch, expected the big one and all three small ones"
    assert len(recording.batches) < 1 + (120 + 15) // 4  # batches are full, not one pair each


def test_small_request_does_not_wait_behind_a_big_one(
    batcher: MicroBatcher, recording: RecordingScorer, passages: list[str]
) -> None:
    big = pairs_for(recording, "history of rome", passages[:200])
    small = pairs_for(recording, "how do vaccines work", passages[:5])

    async def run() -> tuple[int, int, int]:
        big_task = asyncio.ensure_future(batcher.score(big))
        while not recording.batches:  # the big request is being scored
            await asyncio.sleep(0.01)
        arrived = len(recording.batches)
        await batcher.score(small)
        answered = len(recording.batches)
        await big_task
        return arrived, answered, len(recording.batches)

    arrived, answered, total = asyncio.run(run())
    # The small request waits for at most the batch in flight and joins the next one,
    # while the big one still needs many more batches.
    assert answered - arrived <= 2, (arrived, answered, total)
    assert total - answered >= 5, (arrived, answered, total)


def test_queue_bound_refuses_with_retry_after(recording: RecordingScorer, passages: list[str]) -> None:
    scheduler = MicroBatcher(recording, BatchBudget(4096, 16), 50, Metrics())
    try:
        first = pairs_for(recording, "q", passages[:40])
        second = pairs_for(recording, "q2", passages[40:70])

        async def run() -> None:
            recording.gate.clear()
            task = asyncio.ensure_future(scheduler.score(first))
            await asyncio.sleep(0.05)
            with pytest.raises(QueueFull) as refused:
                await scheduler.score(second)
            assert refused.value.retry_after_s >= 1 and "RERANK_MAX_QUEUED_PAIRS" in str(refused.value)
            with pytest.raises(RequestTooLarge):
                await scheduler.score(pairs_for(recording, "q3", passages[:51]))
            recording.gate.set()
            await task

        asyncio.run(run())
    finally:
        recording.gate.set()
        scheduler.stop()


def test_cancelled_request_pairs_are_never_scored(
    batcher: MicroBatcher, recording: RecordingScorer, passages: list[str]
) -> None:
    keep = pairs_for(recording, "history of rome", passages[:32])
    cancelled = pairs_for(recording, "a query whose client went away", passages[32:96])

    async def run() -> None:
        recording.gate.clear()
        kept = asyncio.ensure_future(batcher.score(keep))
        gone = asyncio.ensure_future(batcher.score(cancelled))
        await asyncio.sleep(0.05)
        gone.cancel()
        await asyncio.sleep(0.05)
        recording.gate.set()
        await kept

    asyncio.run(run())
    scored_queries = {pair.query_ids for batch in recording.batches for pair in batch}
    cancelled_query = cancelled[0].query_ids
    first_batch = recording.batches[0]
    # Only the batch already formed when the gate closed may hold its pairs; nothing after it does.
    later = [pair for batch in recording.batches[1:] for pair in batch]
    assert all(pair.query_ids != cancelled_query for pair in later)
    assert sum(pair.query_ids == cancelled_query for pair in first_batch) <= 16
    assert keep[0].query_ids in scored_queries
    assert batcher.queued_pairs == 0


def test_serial_scheduler_scores_the_same(recording: RecordingScorer, passages: list[str]) -> None:
    pairs = pairs_for(recording, "how do vaccines work", passages[:40])
    serial = SerialScheduler(recording, BatchBudget(4096, 16), 1000, Metrics())
    batched = MicroBatcher(recording, BatchBudget(4096, 16), 1000, Metrics())
    try:
        np.testing.assert_allclose(asyncio.run(serial.score(pairs)), asyncio.run(batched.score(pairs)), atol=1e-6)
    finally:
        serial.stop()
        batched.stop()


def test_cache_hits_skip_the_model(passages: list[str], tmp_path) -> None:
    settings = Settings(cache_size=100, threads=2, log_path=tmp_path / "log.jsonl")
    metrics = Metrics()
    engine = Engine(settings, metrics)

    async def run() -> tuple:
        first = await engine.rerank(RerankJob("how do vaccines work", passages[:10]))
        scored = metrics.pairs_scored._value.get()
        second = await engine.rerank(RerankJob("how do vaccines work", passages[:12]))
        return first, second, scored, metrics.pairs_scored._value.get()

    try:
        first, second, scored_before, scored_after = asyncio.run(run())
    finally:
        engine.stop()
    assert scored_after - scored_before == 2  # only the two new documents reached the model
    np.testing.assert_allclose(second.raw[:10], first.raw, atol=0)
    assert metrics.cache_hits._value.get() == 10


def test_budget_plans_length_sorted_batches_within_tokens_and_pairs() -> None:
    budget = BatchBudget(max_tokens=100, max_pairs=3)
    costs = [10, 50, 20, 200, 30, 30, 5]
    plan = budget.plan(costs)
    # The 200-token pair exceeds the budget alone and still gets a batch; no batch passes either limit.
    assert plan == [[3], [1, 4], [5, 2, 0], [6]]
    assert sorted(index for batch in plan for index in batch) == list(range(len(costs)))
    assert all(len(batch) <= 3 and max(costs[i] for i in batch) * len(batch) <= 100 for batch in plan[1:])
