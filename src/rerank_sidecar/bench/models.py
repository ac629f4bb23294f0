"""`rerank-sidecar bench models`: W2 sent to two models of one sidecar at once, against W2 on each model alone.

One sidecar serves the embedded default and the MiniLM-shaped cross-encoder (RERANK_MODELS); half
of W2's clients ask for one model and half for the other, at once. Each model alone gets the same
W2 from all its clients on a single-model sidecar. The models share one compute, so the total
should stay near one model's throughput rather than double or collapse.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace

from rich.table import Table

from .support.data import add_data_argument, traffic_texts
from .support.output import add_json_argument, console, write_json
from .support.results import LoadResult, ModelsLoadReport
from .support.servers import bench_server
from .support.stand_ins import TWO_MODELS, add_cache_dir_argument, bench_cache_dir, two_models_settings
from .support.traffic import run_workload, standard_workloads, traffic_progress, warm_up

# Every request of a run is queued at once; none may be turned away.
_QUEUE_ROOM = {"max_queued_pairs": "100000"}


def run_models_load(args: argparse.Namespace) -> ModelsLoadReport:
    texts = traffic_texts(args.data)
    w2 = next(workload for workload in standard_workloads(args.scale) if workload.name == "W2")
    half = replace(w2, name="W2 half", concurrency=w2.concurrency // 2, requests=w2.requests // 2)
    alone_settings, both = two_models_settings(args.backend, bench_cache_dir(args))
    with traffic_progress() as progress:
        with bench_server({**both, **_QUEUE_ROOM}) as server:
            for model in TWO_MODELS:
                asyncio.run(warm_up(server.url, [half], texts, model=model))

            async def at_once() -> list[LoadResult]:
                return await asyncio.gather(*(
                    run_workload(server.url, half, texts, args.max_seconds, progress, f"together {model}", model)
                    for model in TWO_MODELS
                ))

            together = asyncio.run(at_once())
        alone = []
        for model, settings in alone_settings.items():
            with bench_server({**settings, **_QUEUE_ROOM}) as server:
                asyncio.run(warm_up(server.url, [w2], texts))
                alone.append(asyncio.run(run_workload(server.url, w2, texts, args.max_seconds, progress,
                                                      f"alone {model}")))
    total = sum(result.pairs for result in together) / max(result.seconds for result in together)
    return ModelsLoadReport(models=list(TWO_MODELS), backend=args.backend, together=together, alone=alone,
                            together_pairs_per_s=round(total, 2))


def print_models_load(report: ModelsLoadReport) -> None:
    table = Table(title=f"bench models: {' + '.join(report.models)} ({report.backend})")
    for column in ("config", "clients", "docs", "ok", "503", "pairs/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in [*report.together, *report.alone]:
        table.add_row(r.configuration, str(r.concurrency), str(r.documents), str(r.requests), str(r.rejected),
                      f"{r.pairs_per_s:.1f}", f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}")
    console.print(table)
    for line in report.comparisons():
        console.print(line)


def _run(args: argparse.Namespace) -> int:
    report = run_models_load(args)
    print_models_load(report)
    write_json(report, args.json_out)
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench models` to the `bench` command group."""
    parser = subcommands.add_parser("models", help="W2 sent to two models of one sidecar at once vs each alone")
    add_data_argument(parser)
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies W2's request count")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="stop sending after this long per run")
    add_cache_dir_argument(parser)
    add_json_argument(parser)
    parser.set_defaults(handler=_run)
