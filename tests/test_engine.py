"""The micro-batching engine on the embedded model, in-process: sharing, order, backpressure, cancel, cache."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest

from rerank_sidecar.config import Settings
from rerank_sidecar.engine.batcher import MicroBatcher
from rerank_sidecar.engine.engine import Engine, RerankJob
from rerank_sidecar.engine.errors import QueueFull, RequestTooLarge
from rerank_sidecar.engine.scheduler import BatchBudget
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
        self.before_batch: Callable[[int], None] = lambda number: None
        """Called on the worker thread with each batch's number before it is scored."""

    def encode(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner.encode(*args, **kwargs)

    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        self.gate.wait(30)
        self.before_batch(len(self.batches))
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
    from rerank_sidecar.evaluation.trec import load_benchmark

    benchmark = load_benchmark(trec_dir)
    return [candidate.text for topic in benchmark.topics[:3] for candidate in topic.candidates]


@pytest.fixture
def batcher(recording: RecordingScorer) -> Iterator[MicroBatcher]:
    scheduler = MicroBatcher(recording, BatchBudget(max_tokens=4096, max_pairs=16), 5000, Metrics().for_model("test"))
    yield scheduler
    scheduler.stop()


def padded_length(batch: list[EncodedPair]) -> int:
    """The longest pair's tokens: what the batch is padded to."""
    return max(pair.cost for pair in batch)


def pairs_for(scorer: Scorer, query: str, documents: list[str]) -> list[EncodedPair]:
    return [document.windows[0] for document in scorer.encode(query, documents, None, "truncate", 1)]


def score_queued_together(
    batcher: MicroBatcher, recording: RecordingScorer, filler: list[EncodedPair], requests: list[list[EncodedPair]]
) -> None:
    """Holds the worker on the filler's batch (the first recorded) until every request is queued, then scores all."""

    async def run() -> None:
        recording.gate.clear()
        held = asyncio.ensure_future(batcher.score(filler))  # the worker holds the filler's batch at the gate
        await asyncio.sleep(0.1)
        tasks = [asyncio.ensure_future(batcher.score(pairs)) for pairs in requests]
        await asyncio.sleep(0.1)
        recording.gate.set()
        await asyncio.gather(held, *tasks)

    asyncio.run(run())


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
    # A round (one batch budget: 16 pairs here) takes the oldest (big) request's share, a quarter of
    # it with four requests waiting, then the small requests whole: all three finish within the
    # first round they are in (after the big one's round alone, if it formed before they arrived),
    # while the big one has many rounds to go.
    owners = [{pair.query_ids for pair in batch} for batch in recording.batches]
    small = {pairs[0].query_ids for pairs in requests}
    last_small = max(number for number, ids in enumerate(owners) if ids & small)
    scored_by_then = [pair for batch in recording.batches[: last_small + 1] for pair in batch]
    assert len(scored_by_then) <= 16 + 16, owners
    assert sum(pair.query_ids == big[0].query_ids for pair in scored_by_then) >= 1, "the big one keeps moving"
    assert len(owners) - 1 - last_small >= 5, owners
    assert max(len(ids) for ids in owners[: last_small + 1]) >= 2, "no forward pass shared by two requests"
    assert len(recording.batches) < 1 + (120 + 15) // 4  # batches are not one pair each


def test_a_round_sorts_the_pairs_of_all_requests_by_length(
    batcher: MicroBatcher, recording: RecordingScorer, passages: list[str]
) -> None:
    requests = [pairs_for(recording, f"query {i}", passages[i * 5 : i * 5 + 5]) for i in range(3)]
    filler = pairs_for(recording, "filler", passages[:1])  # one pair: one batch
    score_queued_together(batcher, recording, filler, requests)
    round_batches = recording.batches[1:]  # after the filler's
    costs = [pair.cost for batch in round_batches for pair in batch]
    # One round (15 pairs, within one budget) over all three requests, longest first across
    # requests: each pass pads only to pairs of nearly its own length, whichever request they came from.
    assert len(costs) == 15 and costs == sorted(costs, reverse=True), costs
    assert sum(len({pair.query_ids for pair in batch}) > 1 for batch in round_batches) >= 2, round_batches
    assert all(padded_length(batch) * len(batch) <= 4096 and len(batch) <= 16 for batch in round_batches)
    padded = sum(padded_length(batch) * len(batch) for batch in round_batches)
    assert padded <= 1.1 * sum(costs), (padded, sum(costs))


def test_requests_of_equal_size_finish_one_after_another(
    batcher: MicroBatcher, recording: RecordingScorer, passages: list[str]
) -> None:
    requests = [pairs_for(recording, f"query {i}", passages[i * 40 : i * 40 + 40]) for i in range(3)]
    filler = pairs_for(recording, "filler", passages[:1])  # one pair: one batch
    score_queued_together(batcher, recording, filler, requests)
    owners = [{pair.query_ids for pair in batch} for batch in recording.batches[1:]]  # after the filler's
    last_batch = [max(number for number, ids in enumerate(owners) if pairs[0].query_ids in ids) for pairs in requests]
    # The oldest request is scored first and answered while the others still have batches to go;
    # one pair from each in turn would answer all three in the last batches of one shared round.
    assert last_batch[0] < min(last_batch[1:]) and last_batch[0] < len(owners) - 2, (last_batch, len(owners))


def test_small_request_does_not_wait_behind_a_big_one(
    batcher: MicroBatcher, recording: RecordingScorer, passages: list[str]
) -> None:
    big = pairs_for(recording, "history of rome", passages[:200])
    small = pairs_for(recording, "how do vaccines work", passages[:5])

    def pairs_handed_over() -> int:
        return sum(len(batch) for batch in recording.batches)

    async def run() -> tuple[int, int, int]:
        big_task = asyncio.ensure_future(batcher.score(big))
        while not recording.batches:  # the big request is being scored
            await asyncio.sleep(0.01)
        arrived = pairs_handed_over()
        await batcher.score(small)
        answered = pairs_handed_over()
        await big_task
        return arrived, answered, pairs_handed_over()

    arrived, answered, total = asyncio.run(run())
    # The small request waits for at most the rest of the round in flight (one batch's worth of the
    # big one alone: 16 pairs) and is scored in the next, beside the big one's share (at most one
    # batch's worth of tokens), while the big one still has most of its pairs to go.
    assert answered - arrived <= 16 + 5 + 4096 // min(pair.cost for pair in big) + 1, (arrived, answered, total)
    assert total - answered >= 100, (arrived, answered, total)


def test_small_request_arriving_mid_round_waits_for_at_most_one_batch_budget(
    recording: RecordingScorer, trec_dir
) -> None:
    """A 1,000-document request is being scored (CPU budget: 2048 tokens, 64 pairs); a 5-document
    request that arrives during its fourth pass waits for the rest of that round, at most one budget
    of work, and is scored whole in the next round, beside a share of the big one."""
    from rerank_sidecar.evaluation.trec import load_benchmark

    documents = [candidate.text for topic in load_benchmark(trec_dir).topics[:10] for candidate in topic.candidates]
    big = pairs_for(recording, "history of rome", documents[:1000])
    small = pairs_for(recording, "how do vaccines work", documents[1000:1005] or documents[:5])
    assert (len(big), len(small)) == (1000, 5)
    budget = BatchBudget(2048, 64)
    batcher = MicroBatcher(recording, budget, 5000, Metrics().for_model("test"))
    in_fourth_batch, small_queued = threading.Event(), threading.Event()

    def hold_the_fourth_batch(number: int) -> None:
        if number == 3:
            in_fourth_batch.set()
            small_queued.wait(30)

    recording.before_batch = hold_the_fourth_batch

    async def run() -> None:
        big_task = asyncio.ensure_future(batcher.score(big))
        await asyncio.get_running_loop().run_in_executor(None, in_fourth_batch.wait, 30)
        small_task = asyncio.ensure_future(batcher.score(small))
        await asyncio.sleep(0.05)  # the small request is queued while the fourth batch is in progress
        small_queued.set()
        await small_task
        big_task.cancel()
        await asyncio.gather(big_task, return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        small_queued.set()
        batcher.stop()
    holding_small = [number for number, batch in enumerate(recording.batches)
                     if any(pair.query_ids == small[0].query_ids for pair in batch)]
    first, last = holding_small[0], holding_small[-1]
    assert holding_small == list(range(first, last + 1)), "the small request's pairs are scored in one go"
    # From the pass after the one in flight to the answer: the rest of that round, then the small
    # one's round, each one budget of tokens at most (a round stops at the first pair past it). A
    # round runs longest first, so the cost rises once at most, where the second begins.
    after_arrival = recording.batches[4 : last + 1]
    longest = max(pair.cost for pair in big)
    assert sum(pair.cost for batch in after_arrival for pair in batch) <= 2 * (budget.max_tokens + longest)
    heads = [padded_length(batch) for batch in after_arrival]
    assert sum(later > earlier for earlier, later in itertools.pairwise(heads)) <= 1, heads
    # The round in flight held the big one alone, within one budget padded to its longest pair, so
    # at most this many of its pairs followed pass 3; any more were the big one's share beside the small one.
    in_flight_rest = budget.max_tokens // padded_length(recording.batches[3]) - len(recording.batches[3])
    big_after_arrival = sum(pair.query_ids == big[0].query_ids for batch in after_arrival for pair in batch)
    assert big_after_arrival > in_flight_rest, "the big one keeps moving"


def test_queue_bound_refuses_with_retry_after(recording: RecordingScorer, passages: list[str]) -> None:
    scheduler = MicroBatcher(recording, BatchBudget(4096, 16), 50, Metrics().for_model("test"))
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
    filler = pairs_for(recording, "filler", passages[:1])  # one pair: one batch
    # Short documents to keep: the cancelled request's pairs are the longest of the round, so its first pass holds some.
    keep = pairs_for(recording, "history of rome", [" ".join(text.split()[:8]) for text in passages[:32]])
    cancelled = pairs_for(recording, "a query whose client went away", passages[32:96])
    round_started, resume = threading.Event(), threading.Event()

    def hold_first_batch_of_the_round(number: int) -> None:
        if number == 1:
            round_started.set()
            resume.wait(30)

    recording.before_batch = hold_first_batch_of_the_round

    async def run() -> None:
        recording.gate.clear()
        held = asyncio.ensure_future(batcher.score(filler))
        await asyncio.sleep(0.1)
        gone = asyncio.ensure_future(batcher.score(cancelled))
        kept = asyncio.ensure_future(batcher.score(keep))
        await asyncio.sleep(0.1)
        recording.gate.set()  # the round over both requests forms; its first batch is held
        await asyncio.get_running_loop().run_in_executor(None, round_started.wait, 30)
        gone.cancel()
        await asyncio.sleep(0.05)
        resume.set()
        await asyncio.gather(held, kept)

    asyncio.run(run())
    cancelled_query = cancelled[0].query_ids
    in_held_batch = sum(pair.query_ids == cancelled_query for pair in recording.batches[1])
    later = [pair for batch in recording.batches[2:] for pair in batch]
    # Only the batch already handed to the model holds its pairs: the rest of the round skips them
    # and the pairs no round took leave the queue.
    assert 0 < in_held_batch <= 16
    assert all(pair.query_ids != cancelled_query for pair in later)
    assert sum(pair.query_ids == keep[0].query_ids for batch in recording.batches for pair in batch) == 32
    assert batcher.queued_pairs == 0


def test_serial_scheduler_scores_the_same(recording: RecordingScorer, passages: list[str]) -> None:
    pairs = pairs_for(recording, "how do vaccines work", passages[:40])
    serial = SerialScheduler(recording, BatchBudget(4096, 16), 1000, Metrics().for_model("test"))
    batched = MicroBatcher(recording, BatchBudget(4096, 16), 1000, Metrics().for_model("test"))
    try:
        np.testing.assert_allclose(asyncio.run(serial.score(pairs)), asyncio.run(batched.score(pairs)), atol=1e-6)
    finally:
        serial.stop()
        batched.stop()


def test_cache_hits_skip_the_model(passages: list[str], tmp_path) -> None:
    settings = Settings(cache_size=100, threads=2, log_path=tmp_path / "log.jsonl")
    metrics = Metrics().for_model("test")
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


def least_work_by_brute_force(costs: list[int], budget: BatchBudget) -> int:
    """Every way to cut the length-sorted costs into consecutive batches within the budget, the cheapest."""
    longest_first = sorted(costs, reverse=True)
    best = None
    for cuts in itertools.product([False, True], repeat=len(costs) - 1):
        batches, current = [], [longest_first[0]]
        for cut, cost in zip(cuts, longest_first[1:], strict=True):
            if cut:
                batches.append(current)
                current = []
            current.append(cost)
        batches.append(current)
        if all(len(b) == 1 or (len(b) <= budget.max_pairs and b[0] * len(b) <= budget.max_tokens) for b in batches):
            work = sum(budget.pass_overhead_tokens + b[0] * len(b) for b in batches)
            best = work if best is None else min(best, work)
    assert best is not None
    return best


def test_budget_plans_the_least_work_within_tokens_and_pairs() -> None:
    budget = BatchBudget(max_tokens=100, max_pairs=3, pass_overhead_tokens=16)
    costs = [10, 50, 20, 200, 30, 30, 5]
    # The 200-token pair exceeds the budget alone and still gets a batch; 50 goes alone rather than
    # pad two 30s to its length; no batch passes either limit.
    assert budget.plan(costs) == [[3], [1], [4, 5, 2], [0, 6]]
    rng = random.Random(7)
    for _ in range(40):
        costs = [rng.randint(1, 60) for _ in range(rng.randint(1, 10))]
        plan = budget.plan(costs)
        assert sorted(index for batch in plan for index in batch) == list(range(len(costs)))
        assert all(len(batch) <= 3 and max(costs[i] for i in batch) * len(batch) <= 100 for batch in plan)
        work = sum(16 + max(costs[i] for i in batch) * len(batch) for batch in plan)
        assert work == least_work_by_brute_force(costs, budget), costs


def test_budget_follows_the_scorer_unless_set(scorer: Scorer) -> None:
    on_cpu = scorer.info
    assert (on_cpu.device, on_cpu.backend) == ("cpu", "onnx")
    on_torch = dataclasses.replace(on_cpu, backend="torch")
    on_gpu = dataclasses.replace(on_cpu, backend="torch", device="cuda:0")
    assert BatchBudget.for_scorer(Settings(), on_cpu) == BatchBudget(2048, 64, 16)
    assert BatchBudget.for_scorer(Settings(), on_torch) == BatchBudget(2048, 64, 64)
    assert BatchBudget.for_scorer(Settings(), on_gpu) == BatchBudget(16384, 64, 4096)
    explicit = Settings(max_batch_tokens=3000, max_batch_pairs=8)
    assert BatchBudget.for_scorer(explicit, on_cpu) == BatchBudget(3000, 8, 16)
    assert BatchBudget.for_scorer(explicit, on_gpu) == BatchBudget(3000, 8, 4096)
