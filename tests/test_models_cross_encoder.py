"""Sequence-classification cross-encoder on torch: raw = the logit, relevance = sigmoid(logit), through HTTP.

The server pins RERANK_BACKEND=torch: on the CPU `auto` picks onnx, which tests of its own cover. It runs on
the parity device (RERANK_TEST_DEVICE, the CPU by default); the reference, sentence-transformers, on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ParityDevice, sidecar_env, start_server
from sentence_transformers import CrossEncoder
from transformers import AutoTokenizer

MAX_LENGTH = 128
QUERY = "What fruit is red and crunchy?"
DOCUMENTS = [
    "An apple is a red, crunchy fruit.",
    "Quantum chromodynamics describes the strong interaction.",
    "Apples",
    "Orchards grow many varieties of apples, pears and plums for the autumn markets. " * 12,  # truncated
    "",
]
LONG_QUERY = "which fruit, considering colour, texture, sweetness and season, " * 20 + QUERY


@pytest.fixture(scope="module")
def cross_encoder_sidecar(
    tiny_cross_encoder_dir: Path, parity_device: ParityDevice, tmp_path_factory: pytest.TempPathFactory
) -> Iterator:
    workdir = tmp_path_factory.mktemp("cross-encoder-sidecar")
    settings = {"model_name": str(tiny_cross_encoder_dir), "max_length": str(MAX_LENGTH), "backend": "torch"}
    server = start_server(workdir, sidecar_env(workdir, **settings, **parity_device.settings))
    yield server
    server.stop()


def reference_logits(model_dir: Path, query: str, documents: list[str]) -> np.ndarray:
    """sentence-transformers' CrossEncoder with the identity activation: the model's raw logit per pair."""
    model = CrossEncoder(str(model_dir), max_length=MAX_LENGTH, activation_fn=torch.nn.Identity(), device="cpu")
    return np.asarray(model.predict([(query, document) for document in documents]), dtype=np.float64)


@pytest.mark.parity
def test_raw_is_the_logit_and_relevance_its_sigmoid(
    cross_encoder_sidecar, tiny_cross_encoder_dir: Path, parity_device: ParityDevice
) -> None:
    expected = reference_logits(tiny_cross_encoder_dir, QUERY, DOCUMENTS)
    assert np.ptp(expected) > 0.1, "the fixture's logits must spread, or parity proves nothing"
    with cross_encoder_sidecar.client() as client:
        warm = client.post("/warmup").json()
        assert (warm["family"], warm["backend"], warm["model"]) == ("cross-encoder", "torch", str(tiny_cross_encoder_dir))
        raw = client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}).json()
        normalized = client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    np.testing.assert_allclose(raw["scores"], expected, atol=parity_device.atol, rtol=0)
    np.testing.assert_allclose(normalized["scores"], 1 / (1 + np.exp(-expected)), atol=parity_device.atol, rtol=0)
    assert raw["truncated"] == [3]
    assert [result["index"] for result in normalized["results"]] == np.argsort(-expected, kind="stable").tolist()


@pytest.mark.parity
def test_query_longer_than_the_window_is_cut_not_a_500(
    cross_encoder_sidecar, tiny_cross_encoder_dir: Path, parity_device: ParityDevice
) -> None:
    """Tokenizers refuse a pair whose query alone overflows; the backend keeps half the window for the document."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir)
    offsets = tokenizer(LONG_QUERY, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) > MAX_LENGTH
    half_query = LONG_QUERY[: offsets[MAX_LENGTH // 2 - 1][1]]
    # Documents that fit beside the half-window query, so the reference needs no truncation strategy of its own.
    documents = [document for document in DOCUMENTS if len(document) < 100]
    expected = reference_logits(tiny_cross_encoder_dir, half_query, documents)
    with cross_encoder_sidecar.client() as client:
        response = client.post("/rerank", json={"query": LONG_QUERY, "documents": documents, "raw_scores": True})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["scores"], expected, atol=parity_device.atol, rtol=0)
    assert np.ptp(expected) > 0.01  # the documents, not just the query, decide the scores
