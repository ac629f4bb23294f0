"""scripts/gpu-check.sh --cpu-dry-run: every step of the GPU check runs, on the CPU, and reaches its report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(900)  # about a minute on an idle 2-core box; a shared CI box can take many times that
def test_cpu_dry_run_reports_every_section(tmp_path: Path, trec_dir: Path) -> None:
    docs_bench = sorted((REPO / "docs" / "bench").iterdir())
    out = tmp_path / "gpu-check"
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env |= {"RERANK_BENCH_DATA": str(trec_dir), "RERANK_TREC_DIR": str(trec_dir)}
    done = subprocess.run(
        [str(REPO / "scripts" / "gpu-check.sh"), "--cpu-dry-run", "--out", str(out), "--python", sys.executable],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=880,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = (out / "gpu-cpu-dry-run.md").read_text()
    assert "**failed**" not in report, report

    parity = report[report.index("## Parity tests") : report.index("## MiniLM-L6 shape")]
    for dtype in ("float32", "float16"):
        section = parity[parity.index(f"### {dtype}") :]
        assert "::test_one_document_request_matches_the_model_card` | passed |" in section, section

    minilm = report[report.index("## MiniLM-L6 shape") : report.index("## Qwen3-Reranker-0.6B shape")]
    assert "| batched | W1 |" in minilm and "| batched | W2 |" in minilm
    assert "W1: batched / in-process ceiling" in minilm and "W2: batched / in-process ceiling" in minilm

    qwen3 = report[report.index("## Qwen3-Reranker-0.6B shape") : report.index("## Embeddings")]
    for reuse in ("on", "off"):
        assert f"| batched reuse-{reuse} | W1 |" in qwen3 and f"| batched reuse-{reuse} | W2 |" in qwen3
    assert "W2: throughput batched reuse-on / reuse-off" in qwen3

    embeddings = report[report.index("## Embeddings") :]
    assert "| sidecar default | E1 |" in embeddings and "| sidecar default | E2 |" in embeddings
    assert "| rerank beside E2 |" in embeddings and "not run: Infinity" in embeddings
    assert sorted((REPO / "docs" / "bench").iterdir()) == docs_bench, "a dry run writes nothing under docs/bench/"
