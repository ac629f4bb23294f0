"""`rerank-sidecar bench quality`: NDCG@10, MRR@10, Recall@10 of first-stage order, sidecar and in-process."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import numpy as np
from rich.progress import Progress
from rich.table import Table

from ..evaluation.inprocess import score_and_relevance, score_in_process
from ..evaluation.trec import Benchmark, evaluate, load_benchmark, positional_scores
from .support.data import add_data_argument
from .support.output import add_json_argument, console, write_json
from .support.results import QualityReport, QualityRow, SettingsComparison


def score_via_sidecar(url: str, benchmark: Benchmark, timeout_s: float = 600.0) -> tuple[dict[str, np.ndarray], str]:
    """Raw scores of every topic from a running sidecar's /rerank, and the model it reported."""
    scores: dict[str, np.ndarray] = {}
    model = ""
    with httpx.Client(base_url=url, timeout=timeout_s) as client, Progress(transient=True) as progress:
        task = progress.add_task("scoring through the sidecar", total=len(benchmark.topics))
        for topic in benchmark.topics:
            response = client.post(
                "/rerank",
                json={"query": topic.query, "documents": [c.text for c in topic.candidates], "raw_scores": True},
            )
            response.raise_for_status()
            body = response.json()
            scores[topic.qid], model = np.array(body["scores"], dtype=np.float64), body["model"]
            progress.advance(task)
    return scores, model


def parse_assignments(assignments: list[str]) -> dict[str, str]:
    """RERANK_X=value strings as Settings field overrides; an unknown or malformed one raises ValueError."""
    from ..config import Settings

    overrides: dict[str, str] = {}
    for assignment in assignments:
        name, equals, value = assignment.partition("=")
        field = name.removeprefix("RERANK_").lower()
        if not equals or not name.startswith("RERANK_") or field not in Settings.model_fields:
            raise ValueError(f"{assignment!r} is not RERANK_<SETTING>=value for a known setting (see .env.example)")
        overrides[field] = value
    return overrides


def compare_settings(benchmark: Benchmark, data: str, a: list[str], b: list[str]) -> SettingsComparison:
    """NDCG@10 (and MRR/Recall) of setting A and setting B, and how far their scores drift apart."""
    raw_a, relevance_a = score_and_relevance(benchmark, **parse_assignments(a))
    raw_b, relevance_b = score_and_relevance(benchmark, **parse_assignments(b))
    rows = [QualityRow(ranker="positional", **vars_of(evaluate(benchmark, positional_scores(benchmark)))),
            QualityRow(ranker="A: " + " ".join(a), **vars_of(evaluate(benchmark, raw_a))),
            QualityRow(ranker="B: " + " ".join(b), **vars_of(evaluate(benchmark, raw_b)))]
    return SettingsComparison(
        data=data, topics=len(benchmark.topics), candidates=max(len(t.candidates) for t in benchmark.topics),
        a=a, b=b, rows=rows,
        max_raw_difference=max(float(np.max(np.abs(raw_a[qid] - raw_b[qid]))) for qid in raw_a),
        max_relevance_difference=max(float(np.max(np.abs(relevance_a[qid] - relevance_b[qid]))) for qid in raw_a),
    )


def quality_report(benchmark: Benchmark, data: str, url: str | None, in_process: bool) -> QualityReport:
    rows = [QualityRow(ranker="positional", **vars_of(evaluate(benchmark, positional_scores(benchmark))))]
    sidecar = local = None
    model = None
    if url:
        sidecar, model = score_via_sidecar(url, benchmark)
        rows.append(QualityRow(ranker="sidecar", **vars_of(evaluate(benchmark, sidecar))))
    if in_process:
        local = score_in_process(benchmark)
        rows.append(QualityRow(ranker="in-process", **vars_of(evaluate(benchmark, local))))
    difference = None
    if sidecar is not None and local is not None:
        difference = max(float(np.max(np.abs(sidecar[qid] - local[qid]))) for qid in sidecar)
    candidates = max((len(t.candidates) for t in benchmark.topics), default=0)
    return QualityReport(data=data, topics=len(benchmark.topics), candidates=candidates, model=model, rows=rows,
                         max_score_difference=difference)


def vars_of(quality: object) -> dict[str, float]:
    return {name: getattr(quality, name) for name in ("ndcg10", "mrr10", "recall10")}


def _print_rows(title: str, rows: list[QualityRow]) -> None:
    table = Table(title=title)
    for column in ("ranker", "NDCG@10", "MRR@10", "Recall@10"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row.ranker, f"{row.ndcg10:.4f}", f"{row.mrr10:.4f}", f"{row.recall10:.4f}")
    console.print(table)


def print_quality(report: QualityReport) -> None:
    _print_rows(f"bench quality: {report.topics} queries x {report.candidates} candidates ({report.model})",
                report.rows)
    if report.max_score_difference is not None:
        console.print(f"largest |sidecar - in-process| raw score difference: {report.max_score_difference:.2e}")


def print_comparison(report: SettingsComparison) -> None:
    _print_rows(f"bench quality --a/--b: {report.topics} queries x {report.candidates} candidates", report.rows)
    console.print(f"largest |A - B|: raw score {report.max_raw_difference:.2e}, "
                  f"relevance {report.max_relevance_difference:.2e}")


def _run(args: argparse.Namespace) -> int:
    benchmark = load_benchmark(Path(args.data)).limited(args.max_topics, args.max_candidates)
    if args.a or args.b:
        if not (args.a and args.b):
            raise SystemExit("bench quality: give both --a and --b "
                             "(e.g. --a RERANK_QUANTIZE=none --b RERANK_QUANTIZE=int8)")
        try:
            report: QualityReport | SettingsComparison = compare_settings(benchmark, args.data, args.a, args.b)
        except ValueError as exc:
            raise SystemExit(f"bench quality: {exc}") from exc
        print_comparison(report)
    else:
        report = quality_report(benchmark, args.data, args.url, args.in_process)
        print_quality(report)
    write_json(report, args.json_out)
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench quality` to the `bench` command group."""
    parser = subcommands.add_parser("quality", help="NDCG@10 / MRR@10 / Recall@10: first-stage order vs sidecar "
                                                    "vs in-process")
    add_data_argument(parser)
    parser.add_argument("--url", help="running sidecar to score through (e.g. http://127.0.0.1:8765)")
    parser.add_argument("--in-process", action="store_true", help="also score with the configured model in-process")
    parser.add_argument("--a", action="append", metavar="RERANK_X=VALUE",
                        help="compare two settings in-process: setting A (repeat for several), over the environment's")
    parser.add_argument("--b", action="append", metavar="RERANK_X=VALUE", help="setting B, likewise")
    parser.add_argument("--max-topics", type=int, help="only the first N queries")
    parser.add_argument("--max-candidates", type=int, help="only the first N candidates of each query")
    add_json_argument(parser)
    parser.set_defaults(handler=_run)
