"""Qwen3-Embedding: a tiny random model in the published layout, held to the model card's recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import QWEN3_EMBEDDING_PROMPTS, TinyQwen3Cache, build_tiny_qwen3_embedding_cache
from qwen3_embedding_reference import DOCUMENTS, MAX_LENGTH, QUERIES, card_documents, card_queries

# Vectors of one text agree to this across batches, padding and implementations (fp32 on the CPU).
ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny_qwen3_embedding(tmp_path_factory: pytest.TempPathFactory) -> TinyQwen3Cache:
    """A tiny random Qwen3-Embedding-0.6B (real tokenizer and vocabulary) in a HuggingFace cache, built once."""
    hf_home = tmp_path_factory.mktemp("qwen3-embedding-hf")
    return TinyQwen3Cache(hf_home, *build_tiny_qwen3_embedding_cache(hf_home))


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

