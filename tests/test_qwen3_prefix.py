"""Qwen3 prefix reuse and CPU int8: parity with the model card's full prompts, prefix runs counted, /health."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
import torch
from conftest import ParityDevice
from model_factory import TinyQwen3Cache
from qwen3_reference import CUSTOM_INSTRUCTION, DOCUMENTS, MAX_LENGTH, QUERY, RIVER, local_scorer, model_card_raw_scores

from rerank_sidecar.engine.budget import BatchBudget
from rerank_sidecar.models.base import EncodedPair
from rerank_sidecar.models.torch_int8 import PerTokenInt8Linear

SHORT_QUERY = "Sediment?"
LONG_QUERY = "Which processes let rivers carry sand, silt and clay from mountain valleys down to the delta?"
# Documents whose first token takes in the space after `<Document>:` (" Rivers") and others whose first
# token does not (empty, a newline, a leading space, punctuation): the shared prefix ends at different tokens.
SEAM_DOCUMENTS = ["Rivers carry sediment downstream.", "", "\nDeltas form at river mouths.", " Silt.", "(sand)"]


@functools.cache
def scorers(cache: TinyQwen3Cache, device: ParityDevice) -> tuple:
    """The reuse-on and reuse-off scorers of the tiny model on the parity device (loaded once per session)."""
    on = local_scorer(cache, max_length=MAX_LENGTH, **device.settings)
    off = local_scorer(cache, max_length=MAX_LENGTH, qwen3_prefix_reuse=False, **device.settings)
    return on, off


@pytest.fixture
def reuse_scorers(offline_process, tiny_qwen3_cache: TinyQwen3Cache, parity_device: ParityDevice) -> tuple:
    return scorers(tiny_qwen3_cache, parity_device)


class TokenLog:
    """Every row of token ids the model's embedding layer is given (padding dropped)."""

    def __init__(self, model: torch.nn.Module, pad_id: int) -> None:
        self.rows: list[list[int]] = []
        self._pad_id = pad_id
        self._handle = model.embed_tokens.register_forward_pre_hook(self._record)

    def _record(self, _module, args) -> None:
        self.rows.extend([token for token in row if token != self._pad_id] for row in args[0].tolist())

    def close(self) -> None:
        self._handle.remove()

    def occurrences(self, tokens: Sequence[int]) -> int:
        """Rows holding `tokens` as one contiguous run."""
        width = len(tokens)
        return sum(
            any(row[start : start + width] == list(tokens) for start in range(len(row) - width + 1))
            for row in self.rows
        )


@pytest.fixture
def token_log(reuse_scorers) -> Iterator:
    logs: list[TokenLog] = []

    def attach(scorer) -> TokenLog:
        logs.append(TokenLog(scorer.model, scorer.tokenizer.pad_token_id))
        return logs[-1]

    yield attach
    for log in logs:
        log.close()


def ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks (the scores here have no ties)."""
    return np.argsort(np.argsort(values))


def first_windows(encoded) -> list[EncodedPair]:
    return [document.windows[0] for document in encoded]


@pytest.mark.parity
def test_requests_of_different_queries_in_one_batch_match_the_model_card(
    reuse_scorers, tiny_qwen3_cache, parity_device: ParityDevice
) -> None:
    """Two queries of different lengths, one with an instruction override, seam-varying and truncated documents."""
    on, _ = reuse_scorers
    short = first_windows(on.encode(SHORT_QUERY, SEAM_DOCUMENTS + DOCUMENTS, None, "truncate", 1))
    long = first_windows(on.encode(LONG_QUERY, SEAM_DOCUMENTS, CUSTOM_INSTRUCTION, "truncate", 1))
    interleaved = [pair for both in zip(short, long, strict=False) for pair in both] + short[len(long) :]
    raw = dict(zip(map(id, interleaved), on.score_batch(interleaved), strict=True))
    expected_short, cut = model_card_raw_scores(
        tiny_qwen3_cache.snapshot, SHORT_QUERY, SEAM_DOCUMENTS + DOCUMENTS, None, MAX_LENGTH
    )
    expected_long, _ = model_card_raw_scores(
        tiny_qwen3_cache.snapshot, LONG_QUERY, SEAM_DOCUMENTS, CUSTOM_INSTRUCTION, MAX_LENGTH
    )
    assert cut, "some documents must be truncated"
    np.testing.assert_allclose([raw[id(pair)] for pair in short], expected_short, atol=parity_device.atol, rtol=0)
    np.testing.assert_allclose([raw[id(pair)] for pair in long], expected_long, atol=parity_device.atol, rtol=0)
    assert len(short[0].prefix.ids) != len(long[0].prefix.ids)


def test_the_shared_prefix_ends_where_the_documents_first_tokens_differ(reuse_scorers) -> None:
    on, _ = reuse_scorers
    absorbing = first_windows(on.encode(QUERY, ["Rivers move silt.", "Rivers carry sand."], None, "truncate", 1))
    seams = first_windows(on.encode(QUERY, SEAM_DOCUMENTS, None, "truncate", 1))
    # " Rivers" (space included) is shared by the first pair; with the other seams the prefix stops earlier.
    assert len(absorbing[0].prefix.ids) > len(seams[0].prefix.ids)
    next_tokens = {pair.input_ids[len(pair.prefix.ids)] for pair in seams}
    assert len(next_tokens) > 1
    assert all(pair.input_ids[: len(pair.prefix.ids)] == pair.prefix.ids for pair in seams)


@pytest.mark.parity
def test_chunk_windows_and_reuse_off_give_the_full_prompt_scores(reuse_scorers, parity_device: ParityDevice) -> None:
    on, off = reuse_scorers
    documents = [RIVER * 12, "Rivers.", RIVER * 3]
    chunked = [w for document in on.encode(QUERY, documents, None, "chunk", 8) for w in document.windows]
    plain = [w for document in off.encode(QUERY, documents, None, "chunk", 8) for w in document.windows]
    assert len(chunked) > len(documents) and {pair.prefix is None for pair in plain} == {True}
    assert [pair.input_ids for pair in chunked] == [pair.input_ids for pair in plain]
    reused, full = on.score_batch(chunked), off.score_batch(plain)
    assert np.ptp(full) > 0.1
    np.testing.assert_allclose(reused, full, atol=parity_device.atol, rtol=0)
    assert (on.info.details["prefix_reuse"], off.info.details["prefix_reuse"]) == ("on", "off")


@pytest.mark.parity
def test_one_document_request_matches_the_model_card(
    reuse_scorers, tiny_qwen3_cache, parity_device: ParityDevice
) -> None:
    on, _ = reuse_scorers
    (pair,) = first_windows(on.encode(QUERY, ["Rivers carry sediment downstream."], None, "truncate", 1))
    assert len(pair.input_ids) - len(pair.prefix.ids) == 1, "a lone window shares all but its scored token"
    expected, _ = model_card_raw_scores(
        tiny_qwen3_cache.snapshot, QUERY, ["Rivers carry sediment downstream."], None, MAX_LENGTH
    )
    np.testing.assert_allclose(on.score_batch([pair]), expected, atol=parity_device.atol, rtol=0)


@pytest.mark.parity
def test_request_split_over_batches_runs_its_prefix_once(
    reuse_scorers, tiny_qwen3_cache, token_log, parity_device: ParityDevice
) -> None:
    on, off = reuse_scorers
    pairs = first_windows(on.encode(LONG_QUERY, DOCUMENTS, None, "truncate", 1))
    system_length = len(on.prefix_ids)
    request_part = pairs[0].prefix.ids[system_length:]
    assert len(request_part) > 10
    log = token_log(on)
    raw = np.concatenate([on.score_batch(pairs[start : start + 2]) for start in range(0, len(pairs), 2)])
    expected, _ = model_card_raw_scores(tiny_qwen3_cache.snapshot, LONG_QUERY, DOCUMENTS, None, MAX_LENGTH)
    np.testing.assert_allclose(raw, expected, atol=parity_device.atol, rtol=0)
    # The request's part of the prefix went through the model once; the system prompt not at all (load-time).
    assert log.occurrences(request_part) == 1
    assert log.occurrences(on.prefix_ids) == 0
    seen = sum(len(row) for row in log.rows)
    assert seen == len(request_part) + sum(len(pair.input_ids) - len(pair.prefix.ids) for pair in pairs)
    # Without reuse, every window carries the whole prompt.
    full_log = token_log(off)
    off.score_batch([EncodedPair(pair.input_ids) for pair in pairs])
    assert full_log.occurrences(request_part) == full_log.occurrences(on.prefix_ids) == len(pairs)


def test_batch_cost_counts_own_tokens_and_a_fraction_of_the_prefix(reuse_scorers) -> None:
    on, off = reuse_scorers
    (reused,) = first_windows(on.encode(QUERY, ["Rivers carry sediment downstream."], None, "truncate", 1))
    (full,) = first_windows(off.encode(QUERY, ["Rivers carry sediment downstream."], None, "truncate", 1))
    assert full.cost == len(full.input_ids)
    own = len(reused.input_ids) - len(reused.prefix.ids)
    assert own < reused.cost < full.cost / 2


@pytest.fixture
def int8_scorer(offline_process, tiny_qwen3_cache: TinyQwen3Cache):
    """The tiny model's CPU int8 scorer, prefix reuse on."""
    return local_scorer(tiny_qwen3_cache, max_length=MAX_LENGTH, quantize="int8", device="cpu")


def test_int8_scores_rank_like_fp32(int8_scorer, reuse_scorers) -> None:
    _, off = reuse_scorers
    int8 = int8_scorer
    assert int8.info.details["quantize"] == "int8" and int8.info.details["prefix_reuse"] == "on"
    assert isinstance(int8.model.layers[0].mlp.up_proj, PerTokenInt8Linear)
    documents = SEAM_DOCUMENTS + DOCUMENTS + [f"{RIVER} Variant {i}: " + "silt " * i for i in range(8)]
    raw_int8 = int8.score_batch(first_windows(int8.encode(QUERY, documents, None, "truncate", 1)))
    raw_fp32 = off.score_batch(first_windows(off.encode(QUERY, documents, None, "truncate", 1)))
    relevance = int8.relevance(raw_int8)
    assert ((relevance >= 0) & (relevance <= 1)).all() and np.isfinite(raw_int8).all()
    rho = float(np.corrcoef(ranks(raw_int8), ranks(raw_fp32))[0, 1])  # Spearman: Pearson of the ranks
    print(f"int8 vs fp32 on the tiny Qwen3: Spearman {rho:.3f} over {len(documents)} documents")
    assert rho >= 0.8
    assert np.abs(raw_int8 - raw_fp32).max() > 1e-4, "int8 must actually change the arithmetic"


def test_int8_scores_do_not_depend_on_batch_mates(int8_scorer) -> None:
    """Alone, in batches of 1, 7 and 16, and beside another request's pairs: the same raw scores.

    torch.ao's dynamic quantization, which this backend used before, moved these scores by up to 0.4.
    """
    documents = [f"{RIVER} Variant {i}: " + "silt " * (3 * i) for i in range(16)]

    def request() -> list[EncodedPair]:  # a fresh encode: its prefix is computed again, by the batch holding it
        return first_windows(int8_scorer.encode(QUERY, documents, None, "truncate", 1))

    def in_batches(size: int) -> np.ndarray:
        pairs = request()
        return np.concatenate([int8_scorer.score_batch(pairs[start : start + size]) for start in range(0, 16, size)])

    alone = np.array([int8_scorer.score_batch(request_of_one)[0] for request_of_one in (
        first_windows(int8_scorer.encode(QUERY, [document], None, "truncate", 1)) for document in documents)])
    assert np.ptp(alone) > 0.1, "the scores must spread, or agreement at 1e-4 proves nothing"
    for size in (1, 7, 16):
        np.testing.assert_allclose(in_batches(size), alone, atol=1e-4, rtol=0, err_msg=f"batches of {size}")
    other = first_windows(int8_scorer.encode(SHORT_QUERY, SEAM_DOCUMENTS, CUSTOM_INSTRUCTION, "truncate", 1))
    pairs = request()
    mixed = int8_scorer.score_batch(pairs[:8] + other + pairs[8:])
    np.testing.assert_allclose(np.delete(mixed, range(8, 8 + len(other))), alone, atol=1e-4, rtol=0)


def test_the_batch_that_runs_a_prefix_is_charged_its_pass(reuse_scorers) -> None:
    """A one-document request costs its own tokens plus its prefix pass, not the 0.05 weight alone."""
    on, _ = reuse_scorers
    pairs = [first_windows(on.encode(query, ["Rivers carry sediment downstream."], None, "truncate", 1))[0]
             for query in (QUERY, LONG_QUERY)]
    costs, prefixes = [pair.cost for pair in pairs], [pair.prefix for pair in pairs]
    tails = [len(pair.prefix.ids) - len(on.prefix_ids) for pair in pairs]
    assert [prefix.pass_tokens for prefix in prefixes] == tails and min(tails) > max(costs)
    # Room for both pairs' own tokens and one prefix pass, not two: the two requests go in two batches.
    budget = BatchBudget(max_tokens=2 * max(costs) + max(tails), max_pairs=16)
    assert len(budget.plan(costs)) == 1
    assert sorted(map(sorted, budget.plan(costs, prefixes))) == [[0], [1]]
    on.score_batch(pairs)  # computes both prefixes: later batches pay the 0.05 weight only
    assert [prefix.pass_tokens for prefix in prefixes] == [0, 0]
    assert len(budget.plan(costs, prefixes)) == 1


def test_health_reports_int8_and_prefix_reuse(sidecar_factory, tiny_qwen3_cache: TinyQwen3Cache) -> None:
    server = sidecar_factory(
        extra_env=tiny_qwen3_cache.env,
        model_name=tiny_qwen3_cache.repo_id,
        model_revision=tiny_qwen3_cache.sha,
        max_length=str(MAX_LENGTH),
        quantize="int8",
    )
    with server.client() as client:
        ranked = client.post("/rerank", json={"query": QUERY, "documents": SEAM_DOCUMENTS}).json()
        health = client.get("/health").json()
    assert health["details"]["quantize"] == "int8" and health["details"]["prefix_reuse"] == "on"
    assert all(0 <= result["relevance_score"] <= 1 for result in ranked["results"])
    assert len(ranked["results"]) == len(SEAM_DOCUMENTS)


def test_bench_quality_compares_two_settings(tiny_qwen3_cache, trec_dir, tmp_path, monkeypatch) -> None:
    from rerank_sidecar.cli import main

    monkeypatch.setenv("RERANK_MODEL_NAME", str(tiny_qwen3_cache.snapshot))
    monkeypatch.setenv("RERANK_THREADS", "2")
    slice_args = ["bench", "quality", "--data", str(trec_dir), "--max-topics", "2", "--max-candidates", "8"]

    def compare(a: str, b: str) -> dict:
        out = tmp_path / f"{a}-{b}.json"
        assert main([*slice_args, "--a", a, "--b", b, "--json", str(out)]) == 0
        return json.loads(out.read_text())

    reuse = compare("RERANK_QWEN3_PREFIX_REUSE=true", "RERANK_QWEN3_PREFIX_REUSE=false")
    assert [row["ranker"] for row in reuse["rows"]] == [
        "positional", "A: RERANK_QWEN3_PREFIX_REUSE=true", "B: RERANK_QWEN3_PREFIX_REUSE=false"
    ]
    assert reuse["topics"] == 2 and reuse["max_raw_difference"] < 1e-4
    assert reuse["rows"][1]["ndcg10"] == pytest.approx(reuse["rows"][2]["ndcg10"])
    int8 = compare("RERANK_QUANTIZE=none", "RERANK_QUANTIZE=int8")
    assert int8["max_raw_difference"] > 1e-4 and 0 < int8["max_relevance_difference"] < 1
    with pytest.raises(SystemExit, match="RERANK_QUANTISE"):
        main([*slice_args, "--a", "RERANK_QUANTISE=int8", "--b", "RERANK_QUANTIZE=none"])


def test_bench_load_serves_reuse_on_and_off_side_by_side(tiny_qwen3_cache, trec_dir, tmp_path, monkeypatch) -> None:
    from rerank_sidecar.cli import main

    for name, value in tiny_qwen3_cache.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RERANK_THREADS", "2")
    results = tmp_path / "results"
    code = main(["bench", "load", "--model", str(tiny_qwen3_cache.snapshot), "--data", str(trec_dir),
                 "--schedulers", "batched", "--prefix-reuse", "on,off", "--workloads", "W1", "--w1-documents", "6",
                 "--scale", "0.1", "--ceiling-pairs", "8", "--max-seconds", "60",
                 "--cache-dir", str(tmp_path / "cache"), "--json", str(results / "qwen3-load.json")])
    assert code == 0
    report = json.loads((results / "qwen3-load.json").read_text())
    rows = {row["configuration"]: row for row in report["results"]}
    assert set(rows) == {"batched reuse-on", "batched reuse-off"}
    assert all(row["requests"] == 2 and row["documents"] == 6 and row["rejected"] == 0 for row in rows.values())
    assert main(["bench", "report", "--results", str(results), "--out", str(tmp_path / "BENCHMARKS.md")]) == 0
    rendered = (tmp_path / "BENCHMARKS.md").read_text()
    assert "prefix reuse on and off" in rendered and "reuse-on / reuse-off" in rendered
    assert "batched reuse-on / in-process ceiling" in rendered
