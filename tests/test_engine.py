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
from rerank_sidecar.engine.budget import DEFAULT_BATCH_TOKENS, PASS_OVERHEAD_TOKENS, BatchBudget
from rerank_sidecar.engine.compute import SharedCompute
from rerank_sidecar.engine.engine import Engine, RerankJob
from rerank_sidecar.engine.errors import QueueFull, RequestTooLarge, SchedulerStopped
from rerank_sidecar.engine.serial import SerialScheduler
from rerank_sidecar.metrics import Metrics
from rerank_sidecar.models.base import Calibration, EncodedPair, Scorer, SharedPrefix
from rerank_sidecar.models.registry import load_scorer


class RecordingScorer(Scorer):
    """The real scorer, with every batch it is handed written down (and optionally held at a gate)."""

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.info = inner.info
        self.calibration = inner.calibration
        self.batches: list[list[EncodedPair]] = []
        self.handed_over = 0
        """Pairs of every batch the worker has handed in, held at the gate or not."""
        self.gate = threading.Event()
        self.gate.set()
        self.before_batch: Callable[[int], None] = lambda number: None
        """Called on the worker thread with each batch's number before it is scored."""

    def encode(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner.encode(*args, **kwargs)

    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        self.handed_over += len(pairs)
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


def micro_batcher(scorer: Scorer, budget: BatchBudget, max_queued_pairs: int = 5000) -> MicroBatcher:
    """A MicroBatcher for a model alone, its queue bounded by `max_queued_pairs`."""
    return MicroBatcher(scorer, budget, Metrics().for_model("test"), SharedCompute(max_queued_pairs))


@pytest.fixture
def batcher(recording: RecordingScorer) -> Iterator[MicroBatcher]:
    scheduler = micro_batcher(recording, BatchBudget(max_tokens=4096, max_pairs=16))
    yield scheduler
    scheduler.stop()


async def until(condition: Callable[[], bool]) -> None:
    """Waits on observable state, never a fixed time: polls `condition` until it holds (30 s at most)."""
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.001)


def all_queued(scheduler: MicroBatcher | SerialScheduler, recording: RecordingScorer, pairs: int) -> Callable[[], bool]:
    """Whether all `pairs` submitted so far have reached the scheduler: queued, or handed to the model."""
    return lambda: scheduler.queued_pairs + recording.handed_over == pairs


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
        held = asyncio.ensure_future(batcher.score(filler))
        await until(lambda: recording.handed_over == len(filler))  # the worker holds the filler's batch at the gate
        tasks = [asyncio.ensure_future(batcher.score(pairs)) for pairs in requests]
        await until(all_queued(batcher, recording, len(filler) + sum(map(len, requests))))
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
        await until(all_queued(batcher, recording, len(big) + sum(map(len, requests))))
        recording.gate.set()
        return await asyncio.gather(*tasks)

    big_scores, *small_scores = asyncio.run(run())
    for got, expected in zip([*small_scores, big_scores], alone, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    # A round (one batch budget: 16 pairs here) takes the oldest (big) request's share, a quarter of
    # it with four requests waiting, then the small requests whole: all three finish within the
    # first round they are in (after the big one's round alone, if it formed before they arrived),
    # while the big one has many rounds to go.
    owners = [{pair.payload for pair in batch} for batch in recording.batches]
    small = {pairs[0].payload for pairs in requests}
    last_small = max(number for number, ids in enumerate(owners) if ids & small)
    scored_by_then = [pair for batch in recording.batches[: last_small + 1] for pair in batch]
    assert len(scored_by_then) <= 16 + 16, owners
    assert sum(pair.payload == big[0].payload for pair in scored_by_then) >= 1, "the big one keeps moving"
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
    assert sum(len({pair.payload for pair in batch}) > 1 for batch in round_batches) >= 2, round_batches
    assert all(padded_length(batch) * len(batch) <= 4096 and len(batch) <= 16 for batch in round_batches)
    padded = sum(padded_length(batch) * len(batch) for batch in round_batches)
    assert padded <= 1.1 * sum(costs), (padded, sum(costs))


class PrefixComputingScorer:
    """Scores zeros and marks each batch's shared prefixes computed, as Qwen3's prefix pass does."""

    calibration = Calibration()

    def __init__(self, info) -> None:  # type: ignore[no-untyped-def]
        self.info = info

    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        for pair in pairs:
            if pair.prefix is not None:
                pair.prefix.state = "computed"
        return np.zeros(len(pairs))


def test_a_round_counts_the_prefix_pass_it_runs(scorer: Scorer) -> None:
    recording = RecordingScorer(PrefixComputingScorer(scorer.info))  # type: ignore[arg-type]
    batcher = micro_batcher(recording, BatchBudget(max_tokens=300, max_pairs=64, pass_overhead_tokens=16))
    prefix = SharedPrefix(ids=tuple(range(200)))  # a 200-token pass the first batch holding it runs
    prefixed = [EncodedPair(tuple(range(210)), payload="prefixed", prefix=prefix) for _ in range(4)]  # cost 20 each
    plain = [EncodedPair(tuple(range(30)), payload="plain") for _ in range(8)]  # cost 30 each
    try:
        score_queued_together(batcher, recording, [EncodedPair(tuple(range(10)), payload="filler")], [prefixed, plain])
    finally:
        batcher.stop()
    # The prefixed request's pairs (80 tokens) and its prefix pass (200) fill the 300-token round, so the
    # plain pairs (240 tokens) wait for the next; counting the pairs alone, one round would take both and
    # its longest-first plan would score the plain pairs first.
    owners = [[pair.payload for pair in batch] for batch in recording.batches[1:]]
    assert owners == [["prefixed"] * 4, ["plain"] * 8], owners


def test_requests_of_equal_size_finish_one_after_another(
    batcher: MicroBatcher, recording: RecordingScorer, passages: list[str]
) -> None:
    requests = [pairs_for(recording, f"query {i}", passages[i * 40 : i * 40 + 40]) for i in range(3)]
    filler = pairs_for(recording, "filler", passages[:1])  # one pair: one batch
    score_queued_together(batcher, recording, filler, requests)
    owners = [{pair.payload for pair in batch} for batch in recording.batches[1:]]  # after the filler's
    last_batch = [max(number for number, ids in enumerate(owners) if pairs[0].payload in ids) for pairs in requests]
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
        await until(lambda: bool(recording.batches))  # the big request is being scored
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
    batcher = micro_batcher(recording, budget)
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
        await until(all_queued(batcher, recording, len(big) + len(small)))  # while the fourth batch is in progress
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
                     if any(pair.payload == small[0].payload for pair in batch)]
    first, last = holding_small[0], holding_small[-1]
    assert holding_small == list(range(first, last + 1)), "the small request's pairs are scored in one go"
    # From the pass after the one in flight to the answer: the rest of that round, then the small
    # one's round, each within one budget padded as one batch (longest pair x pairs), so their
    # tokens are within two budgets. A round runs longest first, so the cost rises once at most,
    # where the second begins.
    after_arrival = recording.batches[4 : last + 1]
    assert sum(pair.cost for batch in after_arrival for pair in batch) <= 2 * budget.max_tokens
    heads = [padded_length(batch) for batch in after_arrival]
    assert sum(later > earlier for earlier, later in itertools.pairwise(heads)) <= 1, heads
    # The round in flight held the big one alone, within one budget padded to its longest pair, so
    # at most this many of its pairs followed pass 3; any more were the big one's share beside the small one.
    in_flight_rest = budget.max_tokens // padded_length(recording.batches[3]) - len(recording.batches[3])
    big_after_arrival = sum(pair.payload == big[0].payload for batch in after_arrival for pair in batch)
    assert big_after_arrival > in_flight_rest, "the big one keeps moving"


def test_queue_bound_refuses_with_retry_after(recording: RecordingScorer, passages: list[str]) -> None:
    scheduler = micro_batcher(recording, BatchBudget(4096, 16), max_queued_pairs=50)
    try:
        first = pairs_for(recording, "q", passages[:40])
        second = pairs_for(recording, "q2", passages[40:70])

        async def run() -> None:
            recording.gate.clear()
            task = asyncio.ensure_future(scheduler.score(first))
            await until(all_queued(scheduler, recording, len(first)))
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


def test_one_queue_bound_holds_every_model_on_the_compute(recording: RecordingScorer, passages: list[str]) -> None:
    compute = SharedCompute(50)
    busy = MicroBatcher(recording, BatchBudget(4096, 16), Metrics().for_model("busy"), compute)
    other = SerialScheduler(recording, BatchBudget(4096, 16), Metrics().for_model("other"), compute)
    first = pairs_for(recording, "q", passages[:40])

    async def run() -> None:
        recording.gate.clear()
        task = asyncio.ensure_future(busy.score(first))
        await until(all_queued(busy, recording, len(first)))
        # The other model's own queue is empty, but the models' queues together have no room.
        with pytest.raises(QueueFull) as refused:
            await other.score(pairs_for(recording, "q2", passages[40:70]))
        assert f"{busy.queued_pairs} pairs queued, limit 50" in str(refused.value)
        with pytest.raises(RequestTooLarge):
            await other.score(pairs_for(recording, "q3", passages[:51]))
        recording.gate.set()
        await task
        assert len(await other.score(pairs_for(recording, "q2", passages[40:70]))) == 30  # room again

    try:
        asyncio.run(run())
    finally:
        recording.gate.set()
        busy.stop()
        other.stop()


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
        await until(lambda: recording.handed_over == len(filler))  # the worker holds the filler's batch at the gate
        gone = asyncio.ensure_future(batcher.score(cancelled))
        kept = asyncio.ensure_future(batcher.score(keep))
        await until(all_queued(batcher, recording, len(filler) + len(cancelled) + len(keep)))
        recording.gate.set()  # the round over both requests forms; its first batch is held
        await asyncio.get_running_loop().run_in_executor(None, round_started.wait, 30)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)  # its pairs are withdrawn once the task has ended
        resume.set()
        await asyncio.gather(held, kept)

    asyncio.run(run())
    cancelled_query = cancelled[0].payload
    in_held_batch = sum(pair.payload == cancelled_query for pair in recording.batches[1])
    later = [pair for batch in recording.batches[2:] for pair in batch]
    # Only the batch already handed to the model holds its pairs: the rest of the round skips them
    # and the pairs no round took leave the queue.
    assert 0 < in_held_batch <= 16
    assert all(pair.payload != cancelled_query for pair in later)
    assert sum(pair.payload == keep[0].payload for batch in recording.batches for pair in batch) == 32
    assert batcher.queued_pairs == 0


def test_serial_scheduler_scores_the_same(recording: RecordingScorer, passages: list[str]) -> None:
    pairs = pairs_for(recording, "how do vaccines work", passages[:40])
    serial = SerialScheduler(recording, BatchBudget(4096, 16), Metrics().for_model("test"), SharedCompute(1000))
    batched = micro_batcher(recording, BatchBudget(4096, 16), max_queued_pairs=1000)
    try:
        np.testing.assert_allclose(asyncio.run(serial.score(pairs)), asyncio.run(batched.score(pairs)), atol=1e-6)
    finally:
        serial.stop()
        batched.stop()


class WatchedCompute(SharedCompute):
    """A SharedCompute that tells when a scheduler has left it: its stop() has begun."""

    def __init__(self, max_queued_pairs: int) -> None:
        super().__init__(max_queued_pairs)
        self.left = threading.Event()

    def stop_counting(self, scheduler) -> None:  # type: ignore[no-untyped-def]
        super().stop_counting(scheduler)
        self.left.set()


def test_serial_scheduler_stop_finishes_the_request_in_flight_and_fails_the_queued(
    recording: RecordingScorer, passages: list[str]
) -> None:
    compute = WatchedCompute(1000)
    metrics = Metrics().for_model("test")
    serial = SerialScheduler(recording, BatchBudget(4096, 16), metrics, compute)
    in_flight = pairs_for(recording, "how do vaccines work", passages[:5])
    queued = [pairs_for(recording, f"query {i}", passages[5 + i * 5 : 10 + i * 5]) for i in range(2)]
    expected = recording.inner.score_batch(in_flight)

    async def run() -> tuple[np.ndarray, list[BaseException]]:
        recording.gate.clear()
        first = asyncio.ensure_future(serial.score(in_flight))
        await until(lambda: recording.handed_over > 0)  # in flight, its first batch held at the gate
        waiting = [asyncio.ensure_future(serial.score(pairs)) for pairs in queued]
        await until(lambda: serial.queued_pairs == 10)
        stopping = asyncio.get_running_loop().run_in_executor(None, serial.stop)  # waits for the batch in flight
        await asyncio.get_running_loop().run_in_executor(None, compute.left.wait, 30)
        recording.gate.set()
        await stopping
        with pytest.raises(SchedulerStopped):
            await serial.score(queued[0])
        return await first, await asyncio.gather(*waiting, return_exceptions=True)

    try:
        scores, failures = asyncio.run(run())
    finally:
        recording.gate.set()
    np.testing.assert_allclose(scores, expected, atol=1e-6)
    assert all(isinstance(failure, SchedulerStopped) for failure in failures), failures
    scored = [pair.payload for batch in recording.batches for pair in batch]
    assert scored == [in_flight[0].payload] * 5, "a queued request reached the model"
    assert serial.queued_pairs == 0 and metrics.pairs_dropped._value.get() == 10


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


def test_padded_work_cuts_longest_first_within_the_budget() -> None:
    budget = BatchBudget(max_tokens=100, max_pairs=3)
    # [50, 30] padded to 50 (100), then [30, 20, 5] padded to 30 (90): a third pair at 50 would pass 100.
    assert budget.padded_work([50, 30, 30, 20, 5]) == 100 + 90
    assert budget.padded_work([20, 20, 20, 20]) == 60 + 20  # the pair cap cuts too
    assert budget.padded_work([300, 10]) == 300 + 10  # a pair over the budget is a batch of its own
    assert budget.padded_work([]) == 0


def test_budget_follows_the_scorer_unless_set(scorer: Scorer) -> None:
    on_cpu = dataclasses.replace(scorer.info, backend="onnx", device="cpu")
    on_torch = dataclasses.replace(on_cpu, backend="torch")
    on_gpu = dataclasses.replace(on_cpu, backend="torch", device="cuda:0")
    share = Settings().embed_share
    assert BatchBudget.for_scorer(Settings(), on_cpu) == BatchBudget(2048, 64, 16, share)
    assert BatchBudget.for_scorer(Settings(), on_torch) == BatchBudget(2048, 64, 64, share)
    assert BatchBudget.for_scorer(Settings(), on_gpu) == BatchBudget(16384, 64, 4096, share)
    explicit = Settings(max_batch_tokens=3000, max_batch_pairs=8, embed_share=0.5)
    assert BatchBudget.for_scorer(explicit, on_cpu) == BatchBudget(3000, 8, 16, 0.5)
    assert BatchBudget.for_scorer(explicit, on_gpu) == BatchBudget(3000, 8, 4096, 0.5)
    assert BatchBudget.for_scorer(explicit, on_cpu).max_embed_tokens == 1500
    # The model loaded here, on whatever device this machine gave it, gets its device's defaults.
    loaded = scorer.info
    device = "cpu" if loaded.device == "cpu" else "gpu"
    overhead = PASS_OVERHEAD_TOKENS[loaded.backend if device == "cpu" else "gpu"]
    assert BatchBudget.for_scorer(Settings(), loaded) == BatchBudget(DEFAULT_BATCH_TOKENS[device], 64, overhead, share)
