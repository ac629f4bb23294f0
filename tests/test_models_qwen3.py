"""Qwen3-Reranker backend: parity with the model card's recipe through HTTP, windows, instructions, memory."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import ParityDevice, sidecar_env, start_server
from model_factory import TinyQwen3Cache, build_tiny_qwen3_cache
from qwen3_reference import (
    CARD_DEFAULT_INSTRUCTION,
    CARD_PREFIX,
    CARD_SUFFIX,
    CUSTOM_INSTRUCTION,
    DOCUMENTS,
    MAX_LENGTH,
    QUERY,
    RIVER,
    local_scorer,
    model_card_raw_scores,
)
from transformers import AutoTokenizer

from rerank_sidecar.models.base import chunk_stride

LONG_QUERY = "Explain in detail, with examples, " * 30 + QUERY  # alone fills the window


@pytest.fixture(scope="module")
def qwen3_sidecar(
    tiny_qwen3_cache: TinyQwen3Cache, parity_device: ParityDevice, tmp_path_factory: pytest.TempPathFactory
) -> Iterator:
    """The tiny model served on the parity device (fp32 on the CPU unless RERANK_TEST_DEVICE says otherwise)."""
    workdir = tmp_path_factory.mktemp("qwen3-sidecar")
    env = sidecar_env(
        workdir,
        model_name=tiny_qwen3_cache.repo_id,
        model_revision=tiny_qwen3_cache.sha,
        max_length=str(MAX_LENGTH),
        **parity_device.settings,
    ) | tiny_qwen3_cache.env
    server = start_server(workdir, env)
    yield server
    server.stop()


def test_warmup_detects_qwen3_at_the_pinned_sha(
    qwen3_sidecar, tiny_qwen3_cache: TinyQwen3Cache, parity_device: ParityDevice
) -> None:
    with qwen3_sidecar.client() as client:
        warm = client.post("/warmup")
        assert warm.status_code == 200, warm.text
        body = warm.json()
        assert (body["model"], body["revision"], body["family"], body["backend"]) == (
            tiny_qwen3_cache.repo_id, tiny_qwen3_cache.sha, "qwen3", "torch"
        )
        health = client.get("/health").json()
        assert health["status"] == "ready" and health["revision"] == tiny_qwen3_cache.sha
        assert (health["device"], health["dtype"]) == (parity_device.device, parity_device.dtype)


@pytest.mark.parity
@pytest.mark.parametrize("instruction", [None, CUSTOM_INSTRUCTION], ids=["default-instruction", "custom-instruction"])
def test_raw_scores_match_the_model_card(
    qwen3_sidecar, tiny_qwen3_cache: TinyQwen3Cache, parity_device: ParityDevice, instruction: str | None
) -> None:
    expected, cut = model_card_raw_scores(tiny_qwen3_cache.snapshot, QUERY, DOCUMENTS, instruction, MAX_LENGTH)
    assert np.ptp(expected) > 0.1, "the fixture's scores must spread, or parity proves nothing"
    payload = {"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}
    if instruction:
        payload["instruction"] = instruction
    with qwen3_sidecar.client() as client:
        raw = client.post("/rerank", json=payload).json()
        normalized = client.post("/rerank", json={**payload, "raw_scores": False}).json()
    np.testing.assert_allclose(raw["scores"], expected, atol=parity_device.atol, rtol=0)
    assert sorted(raw["truncated"]) == cut and cut, "the long documents must be cut, and reported"
    assert [result["index"] for result in raw["results"]] == np.argsort(-expected, kind="stable").tolist()
    np.testing.assert_allclose(normalized["scores"], 1 / (1 + np.exp(-np.asarray(raw["scores"]))), atol=1e-9)


@pytest.mark.parity
def test_query_that_fills_the_window_is_cut_like_the_model_card(
    qwen3_sidecar, tiny_qwen3_cache: TinyQwen3Cache, parity_device: ParityDevice
) -> None:
    """No room is left for any document: the body is cut from the right, the prefix and suffix stay."""
    expected, cut = model_card_raw_scores(tiny_qwen3_cache.snapshot, LONG_QUERY, DOCUMENTS, None, MAX_LENGTH)
    with qwen3_sidecar.client() as client:
        raw = client.post("/rerank", json={"query": LONG_QUERY, "documents": DOCUMENTS, "raw_scores": True}).json()
    np.testing.assert_allclose(raw["scores"], expected, atol=parity_device.atol, rtol=0)
    assert sorted(raw["truncated"]) == cut == list(range(len(DOCUMENTS)))


def test_instruction_and_suffix_change_the_scores(qwen3_sidecar, tiny_qwen3_cache: TinyQwen3Cache) -> None:
    """Sensitivity checks: the parity above would catch a dropped instruction or a cut suffix."""
    default, cut = model_card_raw_scores(tiny_qwen3_cache.snapshot, QUERY, DOCUMENTS, None, MAX_LENGTH)
    custom, _ = model_card_raw_scores(tiny_qwen3_cache.snapshot, QUERY, DOCUMENTS, CUSTOM_INSTRUCTION, MAX_LENGTH)
    naive, _ = model_card_raw_scores(tiny_qwen3_cache.snapshot, QUERY, DOCUMENTS, None, MAX_LENGTH, keep_suffix=False)
    assert np.abs(default - custom).min() > 1e-3
    assert np.abs(default[cut] - naive[cut]).min() > 1e-3
    with qwen3_sidecar.client() as client:
        served = client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}).json()
    assert np.abs(np.asarray(served["scores"])[cut] - naive[cut]).min() > 1e-3


@pytest.fixture(scope="module")
def padded_vocab_cache(tmp_path_factory: pytest.TempPathFactory) -> TinyQwen3Cache:
    """The published checkpoints' padded 151,936-row vocabulary (the tokenizer uses 151,669 of them)."""
    hf_home = tmp_path_factory.mktemp("hf-padded")
    repo_id, sha = build_tiny_qwen3_cache(hf_home, vocab="padded", seed=1)
    return TinyQwen3Cache(hf_home, repo_id, sha)


@pytest.mark.parity
def test_padded_vocabulary_scores_like_the_model_card(
    offline_process, padded_vocab_cache: TinyQwen3Cache, parity_device: ParityDevice
) -> None:
    scorer = local_scorer(padded_vocab_cache, max_length=MAX_LENGTH, **parity_device.settings)
    encoded = scorer.encode(QUERY, DOCUMENTS, None, "truncate", 1)
    raw = scorer.score_batch([document.windows[0] for document in encoded])
    expected, cut = model_card_raw_scores(padded_vocab_cache.snapshot, QUERY, DOCUMENTS, None, MAX_LENGTH)
    np.testing.assert_allclose(raw, expected, atol=parity_device.atol, rtol=0)
    assert [index for index, document in enumerate(encoded) if document.truncated] == cut


def test_instruction_falls_back_to_setting_then_model_card(offline_process, tiny_qwen3_cache: TinyQwen3Cache) -> None:
    configured = local_scorer(tiny_qwen3_cache, instruction=CUSTOM_INSTRUCTION)
    unset = local_scorer(tiny_qwen3_cache, instruction="")

    def prompt(scorer, instruction: str | None) -> tuple[int, ...]:
        return scorer.encode(QUERY, ["Rivers carry sediment."], instruction, "truncate", 1)[0].windows[0].input_ids

    assert prompt(configured, None) == prompt(configured, CUSTOM_INSTRUCTION)
    assert prompt(unset, None) == prompt(unset, CARD_DEFAULT_INSTRUCTION) != prompt(unset, CUSTOM_INSTRUCTION)
    assert prompt(configured, "Find recipes") == prompt(unset, "Find recipes")


def test_chunk_windows_keep_prompt_overlap_and_cap(offline_process, tiny_qwen3_cache: TinyQwen3Cache) -> None:
    scorer = local_scorer(tiny_qwen3_cache, max_length=MAX_LENGTH)
    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen3_cache.snapshot)
    prefix = tuple(tokenizer.encode(CARD_PREFIX, add_special_tokens=False))
    suffix = tuple(tokenizer.encode(CARD_SUFFIX, add_special_tokens=False))
    head = f"<Instruct>: {CARD_DEFAULT_INSTRUCTION}\n<Query>: {QUERY}\n<Document>:"
    head_ids = tuple(tokenizer.encode(head, add_special_tokens=False))
    long_doc = RIVER * 12
    body_ids = tuple(tokenizer.encode(f"{head} {long_doc}", add_special_tokens=False))
    assert body_ids[: len(head_ids)] == head_ids
    doc_ids = body_ids[len(head_ids) :]

    whole = scorer.encode(QUERY, [long_doc], None, "chunk", 100)[0]
    capped = scorer.encode(QUERY, [long_doc], None, "chunk", 3)[0]
    short = scorer.encode(QUERY, ["Rivers."], None, "chunk", 3)[0]
    truncated = scorer.encode(QUERY, [long_doc], None, "truncate", 3)[0]

    room = MAX_LENGTH - len(prefix) - len(suffix) - len(head_ids)
    step = room - chunk_stride(room)
    pieces = []
    for window in whole.windows:
        ids = window.input_ids
        assert len(ids) <= MAX_LENGTH
        assert ids[: len(prefix) + len(head_ids)] == prefix + head_ids and ids[-len(suffix) :] == suffix
        pieces.append(ids[len(prefix) + len(head_ids) : -len(suffix)])
    assert all(piece == doc_ids[i * step : i * step + room] for i, piece in enumerate(pieces))
    assert pieces[-1][-1] == doc_ids[-1] and len(whole.windows) > 3 and not whole.truncated
    def tokens(document) -> list[tuple[int, ...]]:  # the shared prefix depends on which windows a request has
        return [window.input_ids for window in document.windows]

    assert tokens(capped) == tokens(whole)[:3] and capped.truncated
    assert len(short.windows) == 1 and not short.truncated
    assert tokens(truncated) == tokens(whole)[:1] and truncated.truncated


MEMORY_PROBE = """
import json, sys
from pathlib import Path
from rerank_sidecar.config import Settings
from rerank_sidecar.models.registry import load_scorer

def status_kib(field):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field + ":"))
    return int(line.split()[1])

scorer = load_scorer(Settings(model_name=sys.argv[1], max_length=512, threads=2))
words = "the river carries sediment from mountain valleys toward delta plains where farmers grow rice".split()
documents = [" ".join(words[(i + j) % len(words)] for j in range(440)) + f" passage {i}" for i in range(64)]
pairs = [doc.windows[0] for doc in scorer.encode("where does sediment go?", documents, None, "truncate", 1)]
scorer.score_batch(pairs[:2])  # first-call allocations are not what is measured
# Writing 5 to clear_refs resets the peak (VmHWM), so the peak below is the scoring's alone, not the load's.
Path("/proc/self/clear_refs").write_text("5")
rss_before = status_kib("VmRSS")
raw = scorer.score_batch(pairs)
growth = (status_kib("VmHWM") - rss_before) * 1024
report = {"growth": growth, "tokens": [len(p.input_ids) for p in pairs], "vocab": len(scorer.tokenizer)}
print(json.dumps(report | {"finite": bool(abs(raw).max() < 1e6)}))
"""


def test_real_vocabulary_batch_stays_small(tiny_qwen3_cache: TinyQwen3Cache) -> None:
    """64 prompts of ~500 tokens: full-vocabulary logits at every position would be 64*512*151669*4 B = 20 GB."""
    config = json.loads((tiny_qwen3_cache.snapshot / "config.json").read_text())
    assert config["vocab_size"] == 151_669
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tiny_qwen3_cache.snapshot)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    report = json.loads(probe.stdout.strip().splitlines()[-1])
    assert len(report["tokens"]) == 64 and min(report["tokens"]) >= 480 and report["finite"]
    assert report["vocab"] == 151_669
    assert report["growth"] < 2**30, f"peak RSS grew by {report['growth'] / 2**20:.0f} MiB while scoring"
