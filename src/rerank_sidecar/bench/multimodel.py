"""`rerank-sidecar bench models`: W2 sent to two models of one sidecar at once, against W2 on each model alone.

One sidecar serves the embedded default and the MiniLM-shaped cross-encoder (RERANK_MODELS); half
of W2's clients ask for one model and half for the other, at once. Each model alone gets the same
W2 from all its clients on a single-model sidecar. The models share one compute, so the total
should stay near one model's throughput rather than double or collapse.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, Field
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .load import LoadResult, console, model_settings, run_workload, standard_workloads, warm_up
from .memory import TWO_MODELS
from .server import bench_server
from .trec import default_data_dir, load_benchmark


class ModelsLoadReport(BaseModel):
    """What one `bench models` run measured."""

    models: list[str] = Field(description="The two models.")
    backend: str = Field(description="RERANK_BACKEND of the sidecars.")
    together: list[LoadResult] = Field(description="One row per model: its half of W2, both halves at once.")
    alone: list[LoadResult] = Field(description="One row per model: all of W2 on a sidecar serving it alone.")
    together_pairs_per_s: float = Field(description="Both halves' pairs over the longer half's wall time.")


def run_models_load(args: argparse.Namespace) -> ModelsLoadReport:
    from platformdirs import user_cache_dir

    benchmark = load_benchmark(Path(args.data))
    passages = [candidate.text for topic in benchmark.topics for candidate in topic.candidates]
    queries = [topic.query for topic in benchmark.topics]
    cache_dir = Path(args.cache_dir or user_cache_dir("rerank-sidecar"))
    w2 = next(workload for workload in standard_workloads(args.scale) if workload.name == "W2")
    half = replace(w2, name="W2 half", concurrency=w2.concurrency // 2, requests=w2.requests // 2)
    singles = {model: {**model_settings(model, args.backend, cache_dir), "max_queued_pairs": "100000"}
               for model in TWO_MODELS}
    listed = [{"name": model, "model": settings.get("model_name", "")} for model, settings in singles.items()]
    both = {"backend": args.backend, "cache_dir": str(cache_dir), "models": json.dumps(listed),
            "max_queued_pairs": "100000"}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        with bench_server(both) as server:
            for model in TWO_MODELS:
                asyncio.run(warm_up(server.url, [half], passages, queries, model=model))

            async def at_once() -> list[LoadResult]:
                return await asyncio.gather(*(
                    run_workload(server.url, half, passages, queries, args.max_seconds, progress, f"together {model}",
                                 model)
                    for model in TWO_MODELS
                ))

            together = asyncio.run(at_once())
        alone = []
        for model, settings in singles.items():
            with bench_server(settings) as server:
                asyncio.run(warm_up(server.url, [w2], passages, queries))
                alone.append(asyncio.run(run_workload(server.url, w2, passages, queries, args.max_seconds, progress,
                                                      f"alone {model}")))
    total = sum(result.pairs for result in together) / max(result.seconds for result in together)
    return ModelsLoadReport(models=list(TWO_MODELS), backend=args.backend, together=together, alone=alone,
                            together_pairs_per_s=round(total, 2))


def comparisons(report: ModelsLoadReport) -> list[str]:
    """Total pairs/s of both models at once against each model alone and their mean."""
    alone = {result.configuration.removeprefix("alone "): result.pairs_per_s for result in report.alone}
    mean = sum(alone.values()) / len(alone)
    failed = sum(result.rejected for result in [*report.together, *report.alone])
    lines = [f"two models at once: {report.together_pairs_per_s:.1f} pairs/s in all; "
             f"{report.together_pairs_per_s / mean:.2f}x the mean of each alone ({mean:.1f})"]
    lines += [f"  / {model} alone ({pairs:.1f}): {report.together_pairs_per_s / pairs:.2f}x" for model, pairs in alone.items()]
    lines.append(f"requests not answered 200: {failed}")
    return lines


def print_models_load(report: ModelsLoadReport) -> None:
    table = Table(title=f"bench models: {' + '.join(report.models)} ({report.backend})")
    for column in ("config", "clients", "docs", "ok", "503", "pairs/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in [*report.together, *report.alone]:
        table.add_row(r.configuration, str(r.concurrency), str(r.documents), str(r.requests), str(r.rejected),
                      f"{r.pairs_per_s:.1f}", f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}")
    console.print(table)
    for line in comparisons(report):
        console.print(line)


def _run(args: argparse.Namespace) -> int:
    report = run_models_load(args)
    print_models_load(report)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report.model_dump(), indent=2))
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench models` to the `bench` command group."""
    parser = subcommands.add_parser("models", help="W2 sent to two models of one sidecar at once vs each alone")
    parser.add_argument("--data", default=default_data_dir(), help="directory with bm25-top100.json and qrels.txt")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies W2's request count")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="stop sending after this long per run")
    parser.add_argument("--cache-dir", help="where the built benchmark model and ONNX files are cached")
    parser.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    parser.set_defaults(handler=_run)
