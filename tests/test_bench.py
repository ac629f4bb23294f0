"""The bench commands on a small slice: they run, bounded, and write what the report needs."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from rerank_sidecar.bench.quality import score_via_sidecar
from rerank_sidecar.bench.support.traffic import sweep_workloads
from rerank_sidecar.cli import main
from rerank_sidecar.evaluation.inprocess import score_in_process
from rerank_sidecar.evaluation.trec import load_benchmark

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
                 "--sweep-total-requests", "6", "--ceiling-pairs", "16", "--max-seconds", "60",
                 "--cache-dir", str(tmp_path / "cache"),
                 "--json", str(results / "sweep.json"), "--plot", str(results / "sweep.png")])
    assert code == 0
    sweep = json.loads((results / "sweep.json").read_text())
    rows = {(row["configuration"], row["concurrency"]): row for row in sweep["results"]}
    assert set(rows) == {("batched", 1), ("batched", 4), ("serial", 1), ("serial", 4)}
    assert all(row["requests"] > 0 and row["pairs_per_s"] > 0 for row in rows.values())
    # At least 6 requests a point: 6 from one client, 2 from each of 4 clients.
    assert rows[("batched", 1)]["requests"] == 6 and rows[("batched", 4)]["requests"] == 8
    assert sweep["ceiling_pairs_per_s"] > 0
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


def test_sweep_points_send_requests_per_client_or_at_least_a_total() -> None:
    per_client = sweep_workloads([1, 4, 32], documents=5, requests_per_client=4)
    assert [w.requests for w in per_client] == [4, 16, 128]
    at_least = sweep_workloads([1, 2, 4, 8, 16, 32], documents=5, requests_per_client=4, total_requests=200)
    assert [w.requests for w in at_least] == [200, 200, 200, 200, 208, 224]
    assert all(w.requests % w.concurrency == 0 and w.documents == 5 for w in at_least)


def test_a_stand_in_is_built_once_under_one_path(tmp_path, monkeypatch) -> None:
    from rerank_sidecar.bench.support import stand_ins

    builds: list[Path] = []

    def build(target: Path) -> Path:
        builds.append(target)
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        (target / "model.safetensors").write_bytes(b"weights")
        return target

    monkeypatch.setitem(stand_ins.STAND_INS, "fake", stand_ins.StandIn("fake-shape", build))
    half_written = tmp_path / "bench-models" / "fake-shape"
    half_written.mkdir(parents=True)
    (half_written / "config.json").write_text("{}")  # an interrupted build of an older layout: no weights
    first = stand_ins.stand_in("fake", tmp_path)
    assert first == half_written and (first / "model.safetensors").read_bytes() == b"weights"
    assert stand_ins.stand_in("fake", tmp_path) == first and len(builds) == 1
    assert builds[0].name == "fake-shape.building" and not builds[0].exists()
    assert stand_ins.model_settings("fake", "onnx", tmp_path) == {
        "backend": "onnx", "cache_dir": str(tmp_path), "model_name": str(first)}


def test_qwen3_times_three_configurations_and_peak_memory_and_report_renders(
    tiny_qwen3_cache, tmp_path, trec_dir, monkeypatch
) -> None:
    monkeypatch.setenv("RERANK_THREADS", "2")
    results = tmp_path / "results"
    run = ["bench", "qwen3", "--model", str(tiny_qwen3_cache.snapshot), "--data", str(trec_dir),
           "--pairs", "3", "--passes", "1", "--cache-dir", str(tmp_path / "cache"), "--json", str(results / "qwen3.json")]
    with pytest.raises(SystemExit, match="not bf32"):
        main([*run, "--memory-precisions", "int8,bf32"])
    # One precision's fresh process is enough to prove the probe; each costs a torch start-up.
    assert main([*run, "--memory-precisions", "int8"]) == 0
    report = json.loads((results / "qwen3.json").read_text())
    speed = {row["backend"]: row for row in report["speed"]}
    assert list(speed) == ["fp32-full-prompts", "fp32-prefix-reuse", "int8-prefix-reuse"]
    assert all(row["pairs"] == 3 and len(row["passes_pairs_per_s"]) == 1 for row in speed.values())
    assert speed["fp32-full-prompts"]["details"]["prefix_reuse"] == "off"
    assert speed["int8-prefix-reuse"]["details"]["quantize"] == "int8"
    assert report["reuse_over_full"] == round(
        speed["fp32-prefix-reuse"]["pairs_per_s"] / speed["fp32-full-prompts"]["pairs_per_s"], 2)
    [memory] = report["memory"]
    assert memory["precision"] == "int8" and 0 < memory["loaded_mib"] <= memory["peak_mib"] and memory["batch_pairs"] > 0

    assert main(["bench", "report", "--results", str(results), "--out", str(tmp_path / "BENCHMARKS.md")]) == 0
    rendered = (tmp_path / "BENCHMARKS.md").read_text()
    assert f"Qwen3 reranker `{tiny_qwen3_cache.snapshot}` in-process (2 threads)" in rendered
    assert "int8-prefix-reuse" in rendered and "Peak RSS per precision" in rendered


def test_bench_modules_import_no_other_command_and_no_circle() -> None:
    """Each sub-command's module imports support/ and evaluation/, never another sub-command's module, and no
    chain of imports (at the top or inside functions) comes back to where it started."""
    from rerank_sidecar.cli.bench import BENCH_MODULES

    source = Path(__file__).resolve().parents[1] / "src"
    imports = {module: _package_imports(module, path) for module, path in _modules(source).items()}
    commands = {f"rerank_sidecar.bench.{name}" for name in BENCH_MODULES}
    for command in commands:
        assert not imports[command] & (commands - {command}), f"{command} imports another sub-command's module"
    for module in imports:
        assert module not in _reachable(module, imports), f"{module} is in an import circle"


def _modules(source: Path) -> dict[str, Path]:
    """Every module of rerank_sidecar.bench and rerank_sidecar.evaluation by dotted name."""
    modules = {}
    for package in ("bench", "evaluation"):
        for path in (source / "rerank_sidecar" / package).rglob("*.py"):
            parts = path.relative_to(source).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _package_imports(module: str, path: Path) -> set[str]:
    """The rerank_sidecar.bench / .evaluation modules `module` imports, wherever in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(part for part in (base, node.module) if part)
            found |= {target} | {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith(("rerank_sidecar.bench.", "rerank_sidecar.evaluation."))}


def _reachable(start: str, imports: dict[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(imports[start])
    while stack:
        module = stack.pop()
        if module not in seen and module in imports:
            seen.add(module)
            stack.extend(imports[module])
    return seen
