"""`rerank-sidecar bench load`: W1/W2/W3 (and concurrency sweeps) against live sidecars, both schedulers side by side."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from rich.table import Table

from ..config import Settings
from ..evaluation.inprocess import first_windows, load_batched, planned_batches
from .support.data import add_data_argument, traffic_texts
from .support.output import add_json_argument, console, write_json
from .support.results import ONE_LOCK, LoadReport, LoadResult
from .support.servers import bench_server, onelock_server
from .support.stand_ins import MINILM_STAND_IN, add_cache_dir_argument, bench_cache_dir, model_settings
from .support.traffic import run_workload, standard_workloads, sweep_workloads, traffic_progress, warm_up


def run_load(args: argparse.Namespace) -> LoadReport:
    texts = traffic_texts(args.data)
    base = model_settings(args.model, args.backend, bench_cache_dir(args))
    if args.threads:
        base["threads"] = str(args.threads)
    if args.sweep:
        workloads = sweep_workloads([int(c) for c in args.sweep.split(",")], args.sweep_documents,
                                    args.sweep_requests, args.sweep_total_requests)
    else:
        workloads = [w for w in standard_workloads(args.scale, args.w1_documents)
                     if w.name in args.workloads.split(",")]
    results: list[LoadResult] = []
    with traffic_progress() as progress:
        for group in _server_groups(args, base):
            with ExitStack() as stack:
                servers = [(name, stack.enter_context(bench_server(settings, timeout_s, ray_replicas=replicas)))
                           for name, settings, replicas, timeout_s in group]
                if args.one_lock and not args.ray_replicas:
                    if "model_name" not in base:
                        raise SystemExit("--one-lock needs a cross-encoder model (sentence-transformers CrossEncoder)")
                    # Threads as the sidecars have them: the library's default, every core.
                    servers.append((ONE_LOCK, stack.enter_context(onelock_server(base["model_name"], threads=0))))
                for _, server in servers:
                    asyncio.run(warm_up(server.url, workloads, texts, args.warm_up_clients))
                for workload in workloads:  # the configurations take turns, so drift of the machine hits each alike
                    for name, server in servers:
                        results.append(asyncio.run(run_workload(
                            server.url, workload, texts, args.max_seconds, progress, name)))
    ceiling_settings = {**base, "quantize": args.quantize.split(",")[0]}
    ceiling = (in_process_ceiling(ceiling_settings, texts.passages[: args.ceiling_pairs], texts.queries[0])
               if args.ceiling_pairs else None)
    return LoadReport(model=args.model, backend=args.backend, quantize=args.quantize, results=results,
                      ceiling_pairs_per_s=ceiling[0] if ceiling else None, ceiling_layout=ceiling[1] if ceiling else None,
                      ray_replica_cpus=args.ray_replica_cpus if args.ray_replicas else None)


_ServerSpec = tuple[str, dict[str, str], int | None, float]
"""A configuration's name, its RERANK_* settings, its Ray replica count (None: plain) and its ready timeout."""


def _server_groups(args: argparse.Namespace, base: dict[str, str]) -> list[list[_ServerSpec]]:
    """The sidecars to compare, in groups that run side by side: all plain ones together, Ray ones alone."""
    quantizes = args.quantize.split(",")
    # Named by scheduler, and by RERANK_QUANTIZE too when the run compares several (e.g. "batched int8").
    plain = [(scheduler + ("" if len(quantizes) == 1 else f" {quantize}") + reuse_name,
              {**base, **reuse, "scheduler": scheduler, "quantize": quantize, "max_queued_pairs": "100000"})
             for scheduler in args.schedulers.split(",") for quantize in quantizes
             for reuse_name, reuse in _prefix_reuse_variants(args)]
    if not args.ray_replicas:
        return [[(name, settings, None, 120.0) for name, settings in plain]]
    groups = []
    for name, plain_settings in plain:
        settings = {**plain_settings, "ray_replica_cpus": str(args.ray_replica_cpus)}  # also each replica's threads
        for replicas in (int(count) for count in args.ray_replicas.split(",")):
            # One local Ray instance at a time; it starts, then each replica loads.
            groups.append([(f"{name} ray x{replicas}", settings, replicas, 300.0)])
    return groups


def _prefix_reuse_variants(args: argparse.Namespace) -> list[tuple[str, dict[str, str]]]:
    """With --prefix-reuse on,off: one sidecar per value, named e.g. 'batched reuse-on'; else the default only."""
    if not args.prefix_reuse:
        return [("", {})]
    return [(f" reuse-{value}", {"qwen3_prefix_reuse": str(value == "on").lower()})
            for value in args.prefix_reuse.split(",")]


def in_process_ceiling(settings_env: dict[str, str], passages: Sequence[str], query: str,
                       batch_sizes: Sequence[int] = (8, 16, 32, 64)) -> tuple[float, str]:
    """Best pairs/s of the same backend scoring length-sorted pairs directly, and the batch layout that gave it.

    The layouts are fixed batch sizes and the sidecar's own batch planner over all the pairs at once,
    which a live sidecar only sees a window of.
    """
    scorer, budget = load_batched(Settings(**settings_env))
    pairs = sorted(first_windows(scorer, query, list(passages)), key=lambda pair: pair.cost)
    layouts = {f"batch {size}": [pairs[start : start + size] for start in range(0, len(pairs), size)]
               for size in batch_sizes}
    layouts["planned"] = [[pairs[index] for index in batch] for batch in planned_batches(pairs, budget)]
    scorer.score_batch(pairs[:8])  # first call pays one-off set-up costs
    best = (0.0, "")
    for name, batches in layouts.items():
        started = time.perf_counter()
        for batch in batches:
            scorer.score_batch(batch)
        best = max(best, (len(pairs) / (time.perf_counter() - started), name))
    scorer.close()
    return round(best[0], 2), best[1]


def print_report(report: LoadReport) -> None:
    table = Table(title=f"bench load: {report.model} ({report.backend})")
    for column in ("config", "workload", "conc", "docs", "ok", "503", "pairs/s", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in report.results:
        table.add_row(r.configuration, r.workload, str(r.concurrency), str(r.documents), str(r.requests),
                      str(r.rejected), f"{r.pairs_per_s:.1f}", f"{r.requests_per_s:.1f}", f"{r.p50_ms:.0f}",
                      f"{r.p95_ms:.0f}", f"{r.p99_ms:.0f}")
    console.print(table)
    for line in report.comparisons():
        console.print(line)


def _run(args: argparse.Namespace) -> int:
    report = run_load(args)
    print_report(report)
    write_json(report, args.json_out)
    if args.plot:
        from .support.plot import plot_sweep

        plot_sweep(report, Path(args.plot))
        console.print(f"wrote {args.plot}")
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench load` to the `bench` command group."""
    parser = subcommands.add_parser("load", help="W1/W2/W3 or a concurrency sweep against live sidecars, "
                                                 "batched and serial side by side, plus the in-process ceiling")
    add_data_argument(parser)
    parser.add_argument("--model", default=MINILM_STAND_IN,
                        help="builtin, minilm-cross-encoder (MiniLM-L6-shaped, built offline), qwen3-0.6b "
                             "(Qwen3-Reranker-0.6B-shaped, built offline), or a model path/id")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--quantize", default="auto",
                        help="RERANK_QUANTIZE of the sidecars; comma-separated (e.g. auto,int8) runs each side by side")
    parser.add_argument("--schedulers", default="batched,serial", help="comma-separated: batched,serial")
    parser.add_argument("--one-lock", action="store_true",
                        help="also run the seed's design (FastAPI + one asyncio.Lock + sentence-transformers "
                             "CrossEncoder, bench/support/onelock.py) on the same cross-encoder, side by side")
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated subset of W1,W2,W3")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every workload's request count")
    parser.add_argument("--w1-documents", type=int, default=100, help="documents per W1 request (default 100)")
    parser.add_argument("--prefix-reuse", choices=["on", "off", "on,off"],
                        help="Qwen3 models: serve with RERANK_QWEN3_PREFIX_REUSE on and/or off side by side")
    parser.add_argument("--sweep", help="comma-separated concurrencies (e.g. 1,2,4,8,16,32): run a sweep instead")
    parser.add_argument("--sweep-documents", type=int, default=5, help="documents per request in a sweep")
    requests = parser.add_mutually_exclusive_group()
    requests.add_argument("--sweep-requests", type=int, default=8, help="requests per client at each sweep point")
    requests.add_argument("--sweep-total-requests", type=int, default=0,
                          help="requests in all at each sweep point, at least: each of its N clients sends "
                               "ceil(total / N) (instead of --sweep-requests)")
    parser.add_argument("--ray-replicas",
                        help="comma-separated replica counts (e.g. 1,2): serve on Ray Serve (extra [ray]) with each")
    parser.add_argument("--ray-replica-cpus", type=float, default=1.0,
                        help="with --ray-replicas: CPUs (and inference threads) per replica (default 1)")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="stop sending after this long per workload")
    parser.add_argument("--warm-up-clients", type=int, default=0,
                        help="requests per workload in the untimed warm-up burst (default 0: one per client)")
    parser.add_argument("--ceiling-pairs", type=int, default=512, help="pairs for the in-process ceiling (0: skip)")
    add_cache_dir_argument(parser)
    parser.add_argument("--threads", type=int, default=0,
                        help="RERANK_THREADS of the sidecars and the in-process ceiling (default 0: every core)")
    add_json_argument(parser)
    parser.add_argument("--plot", help="write a PNG of latency and throughput against concurrency (sweeps)")
    parser.set_defaults(handler=_run)
