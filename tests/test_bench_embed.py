"""`bench embed` at tiny sizes (no Infinity), and the targets it prints."""

from __future__ import annotations

import math

from rerank_sidecar.bench.support.results import (
    IN_PROCESS_ENCODE,
    INFINITY,
    SIDECAR_DEFAULT,
    SIDECAR_FP32,
    EmbedLoadResult,
    EmbedReport,
    LoadResult,
    RssSample,
    SoakResult,
)
from rerank_sidecar.cli import main


def test_embed_runs_every_system_and_workload_and_report_renders(tmp_path, trec_dir, monkeypatch) -> None:
    monkeypatch.setenv("RERANK_THREADS", "2")
    results = tmp_path / "results"
    absent = tmp_path / "no-infinity" / "python"
    code = main(["bench", "embed", "--data", str(trec_dir), "--infinity-python", str(absent), "--e1-requests", "2",
                 "--e2-requests", "32", "--w1-requests", "1", "--encode-texts", "16", "--no-memory",
                 "--soak-s", "3", "--json", str(results / "embed.json")])
    assert code == 0
    report = EmbedReport.model_validate_json((results / "embed.json").read_text())
    rows = {(row.system, row.workload): row for row in report.results}
    assert set(rows) == {(SIDECAR_DEFAULT, "E1"), (SIDECAR_DEFAULT, "E2"), (SIDECAR_DEFAULT, "E2 mixed"),
                         (SIDECAR_FP32, "E1"), (SIDECAR_FP32, "E2"), (IN_PROCESS_ENCODE, "encode")}
    for system in (SIDECAR_DEFAULT, SIDECAR_FP32):
        e1, e2 = rows[(system, "E1")], rows[(system, "E2")]
        assert (e1.requests, e1.texts, e1.failed) == (2, 2 * 64, 0)
        assert (e2.requests, e2.texts, e2.failed) == (32, 32, 0)
        assert e1.texts_per_s > 0 and e2.p99_ms >= e2.p50_ms > 0
    mixed = rows[(SIDECAR_DEFAULT, "E2 mixed")]
    assert mixed.requests > 0 and mixed.failed == 0  # E2 ran while W1 reranked
    assert report.rerank_alone.pairs == report.rerank_mixed.pairs == 100
    assert [cores.workload for cores in report.cores] == ["rerank alone", "rerank beside E2"]
    assert all(cores.sidecar > 0 and cores.load_generator > 0 for cores in report.cores)
    assert rows[(IN_PROCESS_ENCODE, "encode")].texts == 16
    soak = report.soak
    assert soak.not_200 == 0 and soak.responses > 0 and soak.seconds < 15 and len(soak.samples) >= 5
    assert 1.0 <= soak.rss_max_over_min() < 2  # samples after its settling time
    assert report.memory == [] and len(report.skipped) == 1 and str(absent) in report.skipped[0]

    assert main(["bench", "report", "--results", str(results), "--out", str(tmp_path / "BENCHMARKS.md")]) == 0
    rendered = (tmp_path / "BENCHMARKS.md").read_text()
    assert "## Embeddings" in rendered and "W1 reranking beside E2 / alone" in rendered
    assert "| rerank beside E2 |" in rendered  # the cores each process used
    assert "not run: Infinity" in rendered


def _row(system: str, workload: str, texts_per_s: float, p99_ms: float = 100.0) -> EmbedLoadResult:
    concurrency, per_request = (4, 64) if workload == "E1" else (32, 1)
    return EmbedLoadResult(system=system, workload=workload, concurrency=concurrency, texts_per_request=per_request,
                           requests=10, failed=0, texts=10 * per_request, seconds=1.0, texts_per_s=texts_per_s,
                           p50_ms=p99_ms / 2, p95_ms=p99_ms, p99_ms=p99_ms)


def _w1(configuration: str, pairs_per_s: float) -> LoadResult:
    return LoadResult(configuration=configuration, workload="W1", concurrency=4, documents=100, requests=4, rejected=0,
                      pairs=400, seconds=400 / pairs_per_s, pairs_per_s=pairs_per_s, requests_per_s=1.0, p50_ms=1.0,
                      p95_ms=1.0, p99_ms=1.0)


def test_comparisons_hold_each_figure_to_its_target() -> None:
    report = EmbedReport(
        model="builtin", threads=2,
        results=[_row(SIDECAR_DEFAULT, "E1", 150.0), _row(INFINITY, "E1", 50.0),
                 _row(SIDECAR_DEFAULT, "E2", 300.0, p99_ms=150.0), _row(INFINITY, "E2", 200.0)],
        rerank_alone=_w1("rerank alone", 100.0), rerank_mixed=_w1("rerank beside E2", 75.0),
        soak=SoakResult(seconds=120, responses=500, not_200=0, settle_s=60,
                        samples=[RssSample(at_s=0, rss_mib=300), RssSample(at_s=60, rss_mib=500),
                                 RssSample(at_s=120, rss_mib=510)]),
    )
    # 32 clients at 300 texts/s of one text each: Little's law's mean is 107 ms; p99 150 ms is 1.41x.
    assert math.isclose(report.find(SIDECAR_DEFAULT, "E2").little_ms(), 32 / 300 * 1000)
    assert report.soak.rss_max_over_min() == 510 / 500  # the first minute's growth left out
    lines = report.comparisons()
    assert "E1: sidecar default / Infinity 3.00x texts/s (target >= 3.0x: met)" in lines
    assert "E2: sidecar default / Infinity 1.50x texts/s (target >= 2.0x: NOT met)" in lines
    assert any(line.startswith("E2 sidecar default: p99 / Little's-law mean (107 ms) 1.41x") and "NOT met" in line
               for line in lines)
    assert "W1 reranking beside E2 / alone 0.75x pairs/s (target >= 0.8x: NOT met)" in lines
    assert any(line.startswith("soak 120 s: 500 responses, 0 not 200") and line.endswith("met)") for line in lines)
