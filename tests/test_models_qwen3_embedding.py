"""Qwen3-Embedding: a tiny random model in the published layout, held to the model card's recipe."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from conftest import sidecar_env, start_server
from model_factory import QWEN3_EMBEDDING_PROMPTS, TinyQwen3Cache
from qwen3_embedding_reference import DOCUMENTS, MAX_LENGTH, QUERIES, card_documents, card_queries

from rerank_sidecar.config import Settings
from rerank_sidecar.engine.engine import EmbedJob, Engine, RerankJob
from rerank_sidecar.metrics import Metrics
from rerank_sidecar.models.base import EmbeddingScorer, EncodedPair
from rerank_sidecar.models.registry import detect_family, load_scorer
from rerank_sidecar.models.resolve import ResolvedModel

# Vectors of one text agree to this across batches, padding and implementations (fp32 on the CPU).
ATOL = 1e-5
# Index of the document past the window in DOCUMENTS.
CUT_DOCUMENT = 2


def settings_for(cache: TinyQwen3Cache, **settings: object) -> Settings:
    return Settings(model_name=str(cache.snapshot), threads=2, max_length=MAX_LENGTH, **settings)


def resolved(snapshot: Path) -> ResolvedModel:
    return ResolvedModel(model_id=str(snapshot), path=snapshot, revision="test")


def test_sentence_transformers_reads_the_layout_as_the_model_card_computes(tiny_qwen3_embedding) -> None:
    """The factory's files mean what the published ones do: sentence-transformers, reading only them
    (pooling, Normalize, prompts, the appended <|endoftext|>), gives the model card's vectors."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_qwen3_embedding.snapshot), device="cpu", local_files_only=True)
    model.max_seq_length = MAX_LENGTH
    assert model.prompts == QWEN3_EMBEDDING_PROMPTS and model.default_prompt_name is None
    np.testing.assert_allclose(
        model.encode(QUERIES, prompt_name="query"), card_queries(tiny_qwen3_embedding.snapshot, QUERIES), atol=ATOL
    )
    np.testing.assert_allclose(model.encode(DOCUMENTS), card_documents(tiny_qwen3_embedding.snapshot, DOCUMENTS),
                               atol=ATOL)


def test_the_tokenizer_ends_every_text_with_the_pooled_token(tiny_qwen3_embedding) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_embedding.snapshot)
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    batch = tokenizer(["test", "test again"], padding=True)
    # The published tokenizer's answer to this call (QwenLM/Qwen3-Embedding#122): left padding, then the token.
    assert batch["input_ids"] == [[end_of_text, 1944, end_of_text], [1944, 1549, end_of_text]]
    assert batch["attention_mask"] == [[0, 1, 1], [1, 1, 1]]


def test_detected_as_qwen3_embedding_and_the_reranker_stays_qwen3(tiny_qwen3_embedding, tiny_qwen3_cache) -> None:
    assert detect_family(resolved(tiny_qwen3_embedding.snapshot)) == "qwen3-embedding"
    assert detect_family(resolved(tiny_qwen3_cache.snapshot)) == "qwen3"


def test_engine_embeds_queries_with_the_instruction_and_documents_without(tiny_qwen3_embedding) -> None:
    """Queries (prompt_name "query") and documents (no prompt) in one engine, concurrently, so their texts
    share left-padded passes: each vector equals the model card's, the long document cut as it cuts it."""
    engine = Engine(settings_for(tiny_qwen3_embedding), Metrics().for_model("qwen3-embedding"))
    assert engine.tasks == ("rerank", "embed") and engine.scorer is None  # read from its files, not loaded

    async def run() -> tuple:
        return await asyncio.gather(engine.embed(EmbedJob(QUERIES, prompt_name="query")),
                                    engine.embed(EmbedJob(DOCUMENTS)))

    try:
        queries, documents = asyncio.run(run())
    finally:
        engine.stop()
    snapshot = tiny_qwen3_embedding.snapshot
    np.testing.assert_allclose(queries.vectors, card_queries(snapshot, QUERIES), atol=ATOL)
    np.testing.assert_allclose(documents.vectors, card_documents(snapshot, DOCUMENTS), atol=ATOL)
    assert documents.truncated == [CUT_DOCUMENT] and queries.truncated == []
    assert documents.tokens[CUT_DOCUMENT] == MAX_LENGTH
    info = documents.info
    assert (info.family, info.backend, info.tasks) == ("qwen3-embedding", "torch", ("rerank", "embed"))
    assert info.embedding is not None
    assert (info.embedding.pooling, info.embedding.normalized, info.embedding.dimensions) == ("lasttoken", True, 32)
    assert info.embedding.prompts == QWEN3_EMBEDDING_PROMPTS


def test_reranking_scores_the_cosine_of_the_model_card_vectors(tiny_qwen3_embedding) -> None:
    """Rerank embeds the query after the query prompt and documents as they are, and scores the cosine."""
    engine = Engine(settings_for(tiny_qwen3_embedding), Metrics().for_model("qwen3-embedding"))
    try:
        outcome = asyncio.run(engine.rerank(RerankJob(QUERIES[0], DOCUMENTS)))
    finally:
        engine.stop()
    snapshot = tiny_qwen3_embedding.snapshot
    expected = card_documents(snapshot, DOCUMENTS) @ card_queries(snapshot, QUERIES[:1])[0]
    np.testing.assert_allclose(outcome.raw, expected, atol=ATOL)
    assert outcome.truncated == [CUT_DOCUMENT]
    assert np.argsort(-outcome.raw).tolist() == np.argsort(-expected).tolist()


def test_the_sidecar_serves_it_from_the_cache_on_every_embedding_route(
    tiny_qwen3_embedding, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Served by hub id at its pinned sha: TEI's prompt_name and Cohere's input_type pick the query prompt, no
    prompt for documents; every vector is the model card's, and /rerank ranks by their cosine."""
    workdir = tmp_path_factory.mktemp("qwen3-embedding-sidecar")
    env = sidecar_env(workdir, model_name=tiny_qwen3_embedding.repo_id, model_revision=tiny_qwen3_embedding.sha,
                      max_length=str(MAX_LENGTH), quantize="none") | tiny_qwen3_embedding.env
    server = start_server(workdir, env)
    try:
        with server.client() as client:
            tei_queries = client.post("/embed", json={"inputs": QUERIES, "prompt_name": "query"})
            tei_documents = client.post("/embed", json={"inputs": DOCUMENTS})
            cohere = client.post("/v2/embed", json={"texts": QUERIES[:1], "model": tiny_qwen3_embedding.repo_id,
                                                    "input_type": "search_query", "embedding_types": ["float"]})
            reranked = client.post("/rerank", json={"query": QUERIES[0], "documents": DOCUMENTS, "raw_scores": True})
    finally:
        server.stop()
    for response in (tei_queries, tei_documents, cohere, reranked):
        assert response.status_code == 200, response.text
    snapshot = tiny_qwen3_embedding.snapshot
    queries, documents = card_queries(snapshot, QUERIES), card_documents(snapshot, DOCUMENTS)
    np.testing.assert_allclose(tei_queries.json(), queries, atol=ATOL)
    np.testing.assert_allclose(tei_documents.json(), documents, atol=ATOL)
    np.testing.assert_allclose(cohere.json()["embeddings"]["float"], queries[:1], atol=ATOL)
    np.testing.assert_allclose(reranked.json()["scores"], documents @ queries[0], atol=ATOL)


def test_int8_on_the_cpu_embeds_a_text_the_same_in_any_batch(tiny_qwen3_embedding) -> None:
    """RERANK_QUANTIZE=int8 on torch: per-token int8 linear layers, so batch-mates (and their padding) leave a
    text's vector as it is alone."""
    scorer = load_scorer(settings_for(tiny_qwen3_embedding, quantize="int8", backend="torch"))
    assert isinstance(scorer, EmbeddingScorer) and scorer.info.details["quantize"] == "int8"
    texts = [*QUERIES, *DOCUMENTS]
    windows: list[EncodedPair] = [document.windows[0] for document in scorer.encode_texts(texts, "")]
    alone = np.stack([scorer.run_pass([window]).vectors[0] for window in windows])
    together = scorer.run_pass(windows).vectors
    np.testing.assert_allclose(together, alone, atol=1e-4 * np.abs(alone).max())
    fp32 = load_scorer(settings_for(tiny_qwen3_embedding, quantize="none")).run_pass(windows).vectors
    cosine = (together * fp32).sum(axis=1) / np.linalg.norm(together, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.9, cosine  # int8 of random weights: the same vectors, roughly
