"""Embeddings through the engine, in-process on the embedded model: the same scheduler, passes and fairness as reranking."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from rerank_sidecar.config import Settings
from rerank_sidecar.engine.batcher import MicroBatcher
from rerank_sidecar.engine.budget import BatchBudget
from rerank_sidecar.engine.compute import SharedCompute
from rerank_sidecar.engine.engine import EmbedJob, Engine, RerankJob
from rerank_sidecar.engine.errors import CannotRerank, DimensionsTooLarge, TextTooLong, UnknownPrompt
from rerank_sidecar.metrics import Metrics
from rerank_sidecar.models.base import EmbeddingScorer, EncodedDocument, EncodedPair, PassOutput
from rerank_sidecar.models.bi_encoder import BiEncoderScorer
from rerank_sidecar.models.registry import load_scorer
from rerank_sidecar.models.resolve import resolve_model

FP32 = Settings(threads=2, quantize="none")


class RecordingEmbedder(EmbeddingScorer):
    """The real scorer, with every pass it runs written down (and optionally held at a gate)."""

    def __init__(self, inner: BiEncoderScorer) -> None:
        self.inner = inner
        self.info = inner.info
        self.tokenizer = inner.tokenizer
        self.calibration = inner.calibration
        self.passes: list[list[EncodedPair]] = []
        self.handed_over = 0
        """Rows of every pass the worker has handed in, held at the gate or not."""
        self.gate = threading.Event()
        self.gate.set()

    def encode(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return self.inner.encode(*args, **kwargs)

    def encode_texts(self, texts: Sequence[str], prompt: str) -> list[EncodedDocument]:
        return self.inner.encode_texts(texts, prompt)

    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        return self.run_pass(pairs).scores

    def run_pass(self, pairs: Sequence[EncodedPair]) -> PassOutput:
        self.handed_over += len(pairs)
        self.gate.wait(30)
        self.passes.append(list(pairs))
        return self.inner.run_pass(pairs)


@pytest.fixture(scope="module")
def scorer() -> BiEncoderScorer:
    loaded = load_scorer(FP32)
    assert isinstance(loaded, BiEncoderScorer)
    return loaded


@pytest.fixture
def recording(scorer: BiEncoderScorer) -> RecordingEmbedder:
    return RecordingEmbedder(scorer)


@pytest.fixture
def batcher(recording: RecordingEmbedder) -> Iterator[MicroBatcher]:
    scheduler = MicroBatcher(recording, BatchBudget(max_tokens=2048, max_pairs=64), Metrics().for_model("t"),
                             SharedCompute(5000))
    yield scheduler
    scheduler.stop()


@pytest.fixture(scope="module")
def passages(trec_dir) -> list[str]:
    from rerank_sidecar.evaluation.trec import load_benchmark

    benchmark = load_benchmark(trec_dir)
    return [candidate.text for topic in benchmark.topics[:10] for candidate in topic.candidates]


@pytest.fixture(scope="module")
def reference() -> SentenceTransformer:
    return SentenceTransformer(str(resolve_model(FP32).path), device="cpu")


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.001)


def texts_for(scorer: EmbeddingScorer, texts: list[str]) -> list[EncodedPair]:
    return [document.windows[0] for document in scorer.encode_texts(texts, "")]


def test_engine_embeddings_equal_sentence_transformers(passages: list[str], reference: SentenceTransformer) -> None:
    texts = ["what is the capital of france", *passages[:20], "x"]
    engine = Engine(FP32, Metrics().for_model("t"))
    try:
        outcome = asyncio.run(engine.embed(EmbedJob(texts=texts)))
        short = asyncio.run(engine.embed(EmbedJob(texts=texts, dimensions=32)))
    finally:
        engine.stop()
    expected = reference.encode(texts, batch_size=8)
    assert outcome.vectors.dtype == np.float32 and outcome.vectors.shape == expected.shape
    np.testing.assert_allclose(outcome.vectors, expected, atol=1e-5)
    assert outcome.tokens == [len(reference.tokenizer(text, truncation=True, max_length=256)["input_ids"]) for text in texts]
    # dimensions keeps the first values and normalizes again.
    cut = expected[:, :32] / np.linalg.norm(expected[:, :32], axis=1, keepdims=True)
    np.testing.assert_allclose(short.vectors, cut, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(short.vectors, axis=1), 1.0, atol=1e-6)


def test_engine_refuses_what_the_model_cannot_give(passages: list[str]) -> None:
    engine = Engine(FP32, Metrics().for_model("t"))
    long_text = " ".join(passages[:10])
    try:
        with pytest.raises(DimensionsTooLarge, match="385 is more than the model's 384"):
            asyncio.run(engine.embed(EmbedJob(texts=["a"], dimensions=385)))
        with pytest.raises(UnknownPrompt, match="'query' is not one of the model's prompts"):
            asyncio.run(engine.embed(EmbedJob(texts=["a"], prompt_name="query")))
        with pytest.raises(TextTooLong, match=r"^1: .*\(max_input_length 256\)") as refused:
            asyncio.run(engine.embed(EmbedJob(texts=["a", long_text], truncate=False)))
        assert refused.value.tokens > 256
        right = asyncio.run(engine.embed(EmbedJob(texts=["a", long_text])))
        left = asyncio.run(engine.embed(EmbedJob(texts=["a", long_text], truncation_side="left")))
        assert right.truncated == left.truncated == [1]
        assert right.tokens[1] == 256 and left.tokens[1] <= 256
        assert float(right.vectors[1] @ left.vectors[1]) < 0.99  # different ends of the text were kept
    finally:
        engine.stop()
    embed_only = Engine(FP32.model_copy(update={"model_tasks": "embed"}), Metrics().for_model("t"))
    assert embed_only.tasks == ("embed",)
    with pytest.raises(CannotRerank, match="cannot rerank: it serves embed only"):
        asyncio.run(embed_only.rerank(RerankJob(query="q", documents=["d"])))


def test_an_embedding_request_and_a_rerank_request_share_one_pass(
    recording: RecordingEmbedder, passages: list[str], scorer: BiEncoderScorer
) -> None:
    # A pass costs more than any padding here (as on a GPU), so the planner keeps the round in one pass.
    batcher = MicroBatcher(recording, BatchBudget(max_tokens=16384, max_pairs=64, pass_overhead_tokens=4096),
                           Metrics().for_model("t"), SharedCompute(5000))
    pairs = [document.windows[0] for document in scorer.encode("how do vaccines work", passages[:6], None, "truncate", 1)]
    texts = texts_for(scorer, passages[6:12])

    async def run() -> tuple[np.ndarray, np.ndarray]:
        recording.gate.clear()  # hold the worker so both requests are queued before the first pass forms
        filler = asyncio.ensure_future(batcher.embed(texts_for(scorer, ["filler"])))
        await until(lambda: recording.handed_over == 1)
        scored = asyncio.ensure_future(batcher.score(pairs))
        embedded = asyncio.ensure_future(batcher.embed(texts))
        await until(lambda: batcher.queued_pairs == len(pairs) + len(texts))
        recording.gate.set()
        await filler
        return await scored, await embedded

    try:
        scores, vectors = asyncio.run(run())
    finally:
        batcher.stop()
    assert len(recording.passes) == 2, [len(batch) for batch in recording.passes]
    shared = recording.passes[1]
    assert {pair.payload is None for pair in shared} == {True, False}, "rerank pairs and texts in one pass"
    np.testing.assert_allclose(scores, scorer.score_batch(pairs), atol=1e-6)
    np.testing.assert_allclose(vectors, scorer.run_pass(texts).vectors, atol=1e-5)


def test_a_one_text_request_is_answered_during_a_thousand_text_one(
    batcher: MicroBatcher, recording: RecordingEmbedder, passages: list[str], scorer: BiEncoderScorer
) -> None:
    big = texts_for(scorer, [" ".join(passage.split()[:16]) for passage in passages[:1000]])  # short: a cheap test
    assert len(big) == 1000
    query = texts_for(scorer, ["how do vaccines work"])

    def rows_run() -> int:
        return sum(len(batch) for batch in recording.passes)

    async def run() -> tuple[int, int, int]:
        big_task = asyncio.ensure_future(batcher.embed(big))
        await until(lambda: bool(recording.passes))  # the big request is being embedded
        arrived = rows_run()
        await batcher.embed(query)
        answered = rows_run()
        await big_task
        return arrived, answered, rows_run()

    arrived, answered, total = asyncio.run(run())
    # The one text waits for the rest of the round in flight (one budget: 64 rows at most) and runs in
    # the next round beside the big request's share (at most one more budget), not after 1,000 texts.
    assert answered - arrived <= 64 + 64 + 1, (arrived, answered, total)
    assert total - answered >= 800, (arrived, answered, total)


@pytest.mark.parametrize("embed_share", [0.05, 1.0])
def test_embedding_texts_take_at_most_their_share_of_a_round_while_reranking_waits(
    recording: RecordingEmbedder, passages: list[str], scorer: BiEncoderScorer, embed_share: float
) -> None:
    budget = BatchBudget(max_tokens=2048, max_pairs=64, embed_share=embed_share)
    batcher = MicroBatcher(recording, budget, Metrics().for_model("t"), SharedCompute(5000))
    pairs = [document.windows[0] for document in scorer.encode("how do vaccines work", passages[:25], None, "truncate", 1)]
    queries = [texts_for(scorer, [f"query number {n} about vaccines"]) for n in range(60)]
    finished: list[str] = []

    async def run() -> None:
        recording.gate.clear()  # hold the worker so every request is queued before the first round forms
        filler = asyncio.ensure_future(batcher.embed(texts_for(scorer, ["filler"])))
        await until(lambda: recording.handed_over == 1)

        async def request(name: str, call: Awaitable[np.ndarray]) -> None:
            await call
            finished.append(name)

        rerank = asyncio.ensure_future(request("rerank", batcher.score(pairs)))
        embeds = [asyncio.ensure_future(request("embed", batcher.embed(query))) for query in queries]
        await until(lambda: batcher.queued_pairs == len(pairs) + len(queries))
        recording.gate.set()
        await asyncio.gather(filler, rerank, *embeds)

    try:
        asyncio.run(run())
    finally:
        batcher.stop()
    if embed_share < 1:
        # Each round holds the one-query requests that fit 5% of 2048 tokens (14 of 7 tokens) beside the rerank
        # pairs, which take two rounds: the rerank request is answered while half the queries still wait.
        per_round = budget.max_embed_tokens // queries[0][0].cost
        assert finished.index("rerank") <= 2 * per_round < len(queries) // 2 + 1, finished
    else:
        # Unbounded, every one-query request (fewest left) goes into the first round, ahead of the rerank pairs.
        assert finished[-1] == "rerank", finished
