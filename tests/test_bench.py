"""The bench commands on a small slice: they run, bounded, and write what the report needs."""

from __future__ import annotations

import json

import numpy as np

from rerank_sidecar.bench.quality import score_in_process, score_via_sidecar
from rerank_sidecar.bench.trec import load_benchmark
from rerank_sidecar.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_sidecar_and_in_process_scores_agree_on_a_slice(builtin_sidecar, trec_dir) -> None:
    benchmark = load_benchmark(trec_dir).limited(3, 20)
    served, _ = score_via_sidecar(builtin_sidecar.url, benchmark)
    local = score_in_process(benchmark)
    assert max(float(np.max(np.abs(served[qid] - local[qid]))) for qid in served) < 1e-6


def test_load_sweep_writes_json_and_a_png_and_report_renders(tmp_path, trec_dir, monkeypatch) -> None:
    monkeypatch.setenv("RERANK_THREADS", "2")
    results = tmp_path / "results"
    code = main(["bench", "load", "--model", "builtin", "--data", str(trec_dir), "--sweep", "1,4",
                 "--sweep-requests", "2", "--ceiling-pairs", "16", "--max-seconds", "60",
                 "--cache-dir", str(tmp_path / "cache"),
                 "--json", str(results / "sweep.json"), "--plot", str(results / "sweep.png")])
    assert code == 0
    sweep = json.loads((results / "sweep.json").read_text())
    rows = {(row["configuration"], row["concurrency"]): row for row in sweep["results"]}
    assert set(rows) == {("batched", 1), ("batched", 4), ("serial", 1), ("serial", 4)}
    assert all(row["requests"] > 0 and row["pairs_per_s"] > 0 for row in rows.values())
    assert rows[("batched", 4)]["requests"] == 8 and sweep["ceiling_pairs_per_s"] > 0
    png = (results / "sweep.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000

    assert main(["bench", "report", "--results", str(results), "--out", str(tmp_path / "BENCHMARKS.md")]) == 0
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Concurrency sweep" in report and "docs/bench/sweep.png" in report
    assert (tmp_path / "docs" / "bench" / "sweep.png").read_bytes() == png


def test_backends_times_each_backend_in_turns_and_report_renders(tmp_path, trec_dir, monkeypatch) -> None:
    monkeypatch.setenv("RERANK_THREADS", "2")
    monkeypatch.setenv("RERANK_CACHE_DIR", str(tmp_path / "cache"))  # a fresh export of fp32 and int8
    results = tmp_path / "results"
    results.mkdir()
    code = main(["bench", "backends", "--data", str(trec_dir), "--pairs", "24", "--passes", "2",
                 "--quality-topics", "0", "--json", str(results / "backends.json")])
    assert code == 0
    report = json.loads((results / "backends.json").read_text())
    speed = {row["backend"]: row for row in report["speed"]}
    assert list(speed) == ["torch-fp32", "onnx-fp32", "onnx-int8"] and report["quality"] == []
    for row in speed.values():
        assert row["pairs"] == 24 and len(row["passes_pairs_per_s"]) == 2
        # The figure is the median pass: with two passes, between the two.
        assert min(row["passes_pairs_per_s"]) - 0.01 <= row["pairs_per_s"] <= max(row["passes_pairs_per_s"]) + 0.01
    assert speed["onnx-int8"]["details"]["quantize"] == "int8" and speed["onnx-fp32"]["details"]["quantize"] == "none"
    assert report["int8_over_torch"] == round(speed["onnx-int8"]["pairs_per_s"] / speed["torch-fp32"]["pairs_per_s"], 2)

    assert main(["bench", "report", "--results", str(results), "--out", str(tmp_path / "BENCHMARKS.md")]) == 0
    rendered = (tmp_path / "BENCHMARKS.md").read_text()
    assert "each pass" in rendered and "onnx-int8" in rendered and "not measured in this run" in rendered
