"""`rerank-sidecar bench load`: W1/W2/W3 (and concurrency sweeps) against live sidecars, both schedulers side by side."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from pydantic import BaseModel, Field
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .server import bench_server, onelock_server
from .trec import default_data_dir, load_benchmark

console = Console()
# The configuration name of the seed's design (bench/onelock.py) in results and ratios.
ONE_LOCK = "one-lock"


@dataclass(frozen=True, slots=True)
class Workload:
    """One traffic shape."""

    name: str
    """W1, W2, W3 or sweep-cN."""
    documents: int
    """Documents per (small) request."""
    concurrency: int
    """Clients sending small requests back to back."""
    requests: int
    """Small requests to send in all."""
    big_documents: int = 0
    """W3 only: documents per request of the one client sending big requests meanwhile."""


def standard_workloads(scale: float, w1_documents: int = 100) -> list[Workload]:
    """The three workloads of the engine issue; `scale` shrinks or grows their request counts."""
    count = lambda n: max(1, round(n * scale))  # noqa: E731
    return [
        Workload("W1", documents=w1_documents, concurrency=4, requests=count(24)),
        Workload("W2", documents=5, concurrency=32, requests=count(400)),
        Workload("W3", documents=5, concurrency=8, requests=count(160), big_documents=1000),
    ]


def sweep_workloads(concurrencies: Sequence[int], documents: int, requests_per_client: int) -> list[Workload]:
    return [Workload(f"c{c}", documents, c, max(c, c * requests_per_client)) for c in concurrencies]


class LoadResult(BaseModel):
    """Figures of one workload against one configuration."""

    configuration: str = Field(description="Scheduler (and backend) the sidecar ran.")
    workload: str = Field(description="W1, W2, W3 or a sweep point.")
    concurrency: int = Field(description="Concurrent clients of small requests.")
    documents: int = Field(description="Documents per small request.")
    requests: int = Field(description="Small requests answered 200.")
    rejected: int = Field(description="Small requests answered 503.")
    pairs: int = Field(description="Pairs scored, big requests included.")
    seconds: float = Field(description="Wall time of the workload.")
    pairs_per_s: float = Field(description="Pairs scored per second, all requests.")
    requests_per_s: float = Field(description="Small requests answered per second.")
    p50_ms: float = Field(description="Median latency of small requests.")
    p95_ms: float = Field(description="95th percentile latency of small requests.")
    p99_ms: float = Field(description="99th percentile latency of small requests.")
    big_requests: int = Field(0, description="W3: big requests completed.")


class LoadReport(BaseModel):
    """Everything one `bench load` run measured."""

    model: str = Field(description="Model the sidecars served.")
    backend: str = Field(description="RERANK_BACKEND of the sidecars.")
    quantize: str = Field("auto", description="RERANK_QUANTIZE of the sidecars.")
    results: list[LoadResult] = Field(description="One row per configuration and workload.")
    ceiling_pairs_per_s: float | None = Field(None, description="In-process pairs/s of the best batch layout.")
    ceiling_layout: str | None = Field(
        None, description="The ceiling's batches: 'batch N' (fixed size) or 'planned' (the sidecar's planner), length-sorted."
    )
    ray_replica_cpus: float | None = Field(None, description="CPUs and inference threads per Ray replica, if Ray.")


class _Traffic:
    """Sends one workload's requests and keeps their latencies."""

    def __init__(self, client: httpx.AsyncClient, passages: Sequence[str], queries: Sequence[str],
                 model: str | None = None) -> None:
        self.client = client
        self.model = model
        self.passages = passages
        self.queries = itertools.cycle(queries)
        self.offset = itertools.count()

    def _documents(self, n: int) -> list[str]:
        start = next(self.offset) * 7 % max(1, len(self.passages) - n)
        return list(self.passages[start : start + n])

    async def send(self, n: int) -> tuple[int, float]:
        payload = {"query": next(self.queries), "documents": self._documents(n)}
        if self.model is not None:
            payload["model"] = self.model
        started = time.perf_counter()
        response = await self.client.post("/rerank", json=payload)
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        elif response.status_code != 200:
            response.raise_for_status()
        return response.status_code, time.perf_counter() - started


async def run_workload(url: str, workload: Workload, passages: Sequence[str], queries: Sequence[str],
                        max_seconds: float, progress: Progress, configuration: str,
                        model: str | None = None) -> LoadResult:
    limits = httpx.Limits(max_connections=workload.concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=max_seconds + 60, limits=limits) as client:
        traffic = _Traffic(client, passages, queries, model)
        latencies: list[float] = []
        rejected = 0
        big_done = 0
        remaining = itertools.count()
        deadline = time.monotonic() + max_seconds
        task = progress.add_task(f"{configuration} {workload.name}", total=workload.requests)
        small_finished = asyncio.Event()

        async def small_client() -> None:
            nonlocal rejected
            while next(remaining) < workload.requests and time.monotonic() < deadline:
                status, latency = await traffic.send(workload.documents)
                if status == 200:
                    latencies.append(latency)
                else:
                    rejected += 1
                progress.advance(task)

        async def big_client() -> None:
            nonlocal big_done
            while not small_finished.is_set() and time.monotonic() < deadline:
                status, _ = await traffic.send(workload.big_documents)
                big_done += status == 200

        started = time.perf_counter()
        big = asyncio.ensure_future(big_client()) if workload.big_documents else None
        await asyncio.gather(*(small_client() for _ in range(workload.concurrency)))
        small_finished.set()
        if big is not None:
            await big
        seconds = time.perf_counter() - started
        progress.remove_task(task)
    pairs = len(latencies) * workload.documents + big_done * workload.big_documents
    ms = np.array(latencies or [float("nan")]) * 1000
    return LoadResult(
        configuration=configuration, workload=workload.name, concurrency=workload.concurrency,
        documents=workload.documents, requests=len(latencies), rejected=rejected, pairs=pairs,
        seconds=round(seconds, 3), pairs_per_s=round(pairs / seconds, 2),
        requests_per_s=round(len(latencies) / seconds, 2),
        p50_ms=round(float(np.percentile(ms, 50)), 1), p95_ms=round(float(np.percentile(ms, 95)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1), big_requests=big_done,
    )


async def warm_up(url: str, workloads: Sequence[Workload], passages: Sequence[str], queries: Sequence[str],
                  max_clients: int = 0, model: str | None = None) -> None:
    """One untimed burst of each workload's requests (all its clients at once, big requests left out).

    A fresh server pays once for its first batches of each shape (memory to allocate, and on a GPU
    kernels to load), and that would count against whichever configuration runs first: on an
    H200, W1's p99 was 2.5 s on a fresh sidecar and 0.4 s on the same sidecar a run later.
    """
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        traffic = _Traffic(client, passages, queries, model)
        for workload in workloads:
            clients = min(workload.concurrency, max_clients) if max_clients else workload.concurrency
            await asyncio.gather(*(traffic.send(workload.documents) for _ in range(clients)))


def in_process_ceiling(settings_env: dict[str, str], passages: Sequence[str], query: str,
                       batch_sizes: Sequence[int] = (8, 16, 32, 64)) -> tuple[float, str]:
    """Best pairs/s of the same backend scoring length-sorted pairs directly, and the batch layout that gave it.

    The layouts are fixed batch sizes and the sidecar's own batch planner over all the pairs at once,
    which a live sidecar only sees a window of.
    """
    from ..config import Settings
    from ..engine.budget import BatchBudget
    from ..models.registry import load_scorer
    from ..models.resolve import force_offline

    force_offline()
    settings = Settings(**settings_env)
    scorer = load_scorer(settings)
    pairs = sorted((doc.windows[0] for doc in scorer.encode(query, list(passages), None, "truncate", 1)),
                   key=lambda pair: pair.cost)
    layouts = {f"batch {size}": [pairs[start : start + size] for start in range(0, len(pairs), size)]
               for size in batch_sizes}
    budget = BatchBudget.for_scorer(settings, scorer.info)
    plan = budget.plan_pairs(pairs)
    layouts["planned"] = [[pairs[index] for index in batch] for batch in plan]
    scorer.score_batch(pairs[:8])  # first call pays one-off set-up costs
    best = (0.0, "")
    for name, batches in layouts.items():
        started = time.perf_counter()
        for batch in batches:
            scorer.score_batch(batch)
        best = max(best, (len(pairs) / (time.perf_counter() - started), name))
    scorer.close()
    return round(best[0], 2), best[1]


def model_settings(model: str, backend: str, cache_dir: Path) -> dict[str, str]:
    """RERANK_* settings serving `model`: builtin, minilm-cross-encoder (built offline), or a path/hub id."""
    settings = {"backend": backend, "cache_dir": str(cache_dir)}
    if model == "qwen3-0.6b":
        from .qwen3 import qwen3_model_dir

        settings["model_name"] = str(qwen3_model_dir(cache_dir))
    elif model == "minilm-cross-encoder":
        from .stand_ins import build_minilm_cross_encoder

        target = cache_dir / "bench-models" / "minilm-l6-cross-encoder"
        if not (target / "config.json").is_file():
            build_minilm_cross_encoder(target)
        settings["model_name"] = str(target)
    elif model != "builtin":
        settings["model_name"] = model
    return settings


def run_load(args: argparse.Namespace) -> LoadReport:
    from platformdirs import user_cache_dir

    benchmark = load_benchmark(Path(args.data))
    passages = [candidate.text for topic in benchmark.topics for candidate in topic.candidates]
    queries = [topic.query for topic in benchmark.topics]
    cache_dir = Path(args.cache_dir or user_cache_dir("rerank-sidecar"))
    base = model_settings(args.model, args.backend, cache_dir)
    if args.threads:
        base["threads"] = str(args.threads)
    if args.sweep:
        workloads = sweep_workloads([int(c) for c in args.sweep.split(",")], args.sweep_documents, args.sweep_requests)
    else:
        workloads = [w for w in standard_workloads(args.scale, args.w1_documents)
                     if w.name in args.workloads.split(",")]
    results: list[LoadResult] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
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
                    asyncio.run(warm_up(server.url, workloads, passages, queries, args.warm_up_clients))
                for workload in workloads:  # the configurations take turns, so drift of the machine hits each alike
                    for name, server in servers:
                        results.append(asyncio.run(run_workload(
                            server.url, workload, passages, queries, args.max_seconds, progress, name)))
    ceiling_settings = {**base, "quantize": args.quantize.split(",")[0]}
    ceiling = (in_process_ceiling(ceiling_settings, passages[: args.ceiling_pairs], queries[0])
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


def print_report(report: LoadReport) -> None:
    table = Table(title=f"bench load: {report.model} ({report.backend})")
    for column in ("config", "workload", "conc", "docs", "ok", "503", "pairs/s", "req/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in report.results:
        table.add_row(r.configuration, r.workload, str(r.concurrency), str(r.documents), str(r.requests),
                      str(r.rejected), f"{r.pairs_per_s:.1f}", f"{r.requests_per_s:.1f}", f"{r.p50_ms:.0f}",
                      f"{r.p95_ms:.0f}", f"{r.p99_ms:.0f}")
    console.print(table)
    for line in comparisons(report):
        console.print(line)


def comparisons(report: LoadReport) -> list[str]:
    """The ratios a run exists for: batched/serial, batched/ceiling, and N Ray replicas / one replica."""
    by_key = {(r.configuration, r.workload): r for r in report.results}
    lines = []
    for workload in dict.fromkeys(r.workload for r in report.results):
        auto, int8 = by_key.get(("batched auto", workload)), by_key.get(("batched int8", workload))
        if auto and int8:
            lines.append(f"{workload}: throughput default (auto) / int8 {auto.pairs_per_s / int8.pairs_per_s:.2f}x")
        batched, serial = by_key.get(("batched", workload)), by_key.get(("serial", workload))
        if batched and serial:
            lines.append(f"{workload}: throughput batched/serial {batched.pairs_per_s / serial.pairs_per_s:.2f}x, "
                         f"p99 batched/serial {batched.p99_ms / serial.p99_ms:.2f}x")
        one_lock = by_key.get((ONE_LOCK, workload))
        if batched and one_lock:
            lines.append(f"{workload}: throughput batched/one-lock {batched.pairs_per_s / one_lock.pairs_per_s:.2f}x, "
                         f"p99 batched/one-lock {batched.p99_ms / one_lock.p99_ms:.2f}x")
        if batched and workload == "W2":
            little = batched.concurrency * batched.documents / batched.pairs_per_s * 1000
            lines.append(f"W2: p99 / Little's-law mean ({batched.concurrency * batched.documents} pairs in flight / "
                         f"pairs/s = {little:.0f} ms) {batched.p99_ms / little:.2f}x")
        if batched and report.ceiling_pairs_per_s:
            lines.append(f"{workload}: batched / in-process ceiling {batched.pairs_per_s / report.ceiling_pairs_per_s:.2f}x")
    for r in report.results:
        if r.configuration.endswith(" reuse-on"):
            off = by_key.get((r.configuration.removesuffix("on") + "off", r.workload))
            if off:
                lines.append(f"{r.workload}: throughput {r.configuration} / reuse-off {r.pairs_per_s / off.pairs_per_s:.2f}x, "
                             f"p99 {r.p99_ms / off.p99_ms:.2f}x")
            if report.ceiling_pairs_per_s:
                lines.append(f"{r.workload}: {r.configuration} / in-process ceiling "
                             f"{r.pairs_per_s / report.ceiling_pairs_per_s:.2f}x")
        scheduler, _, replicas = r.configuration.partition(" ray x")
        one_replica = by_key.get((f"{scheduler} ray x1", r.workload))
        if replicas not in ("", "1") and one_replica:
            lines.append(f"{r.workload}: throughput {r.configuration} / ray x1 {r.pairs_per_s / one_replica.pairs_per_s:.2f}x")
    if report.ceiling_pairs_per_s:
        lines.append(f"in-process ceiling: {report.ceiling_pairs_per_s:.1f} pairs/s ({report.ceiling_layout})")
    return lines


def _run(args: argparse.Namespace) -> int:
    report = run_load(args)
    print_report(report)
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report.model_dump(), indent=2))
        console.print(f"wrote {args.json_out}")
    if args.plot:
        from .plot import plot_sweep

        plot_sweep(report, Path(args.plot))
        console.print(f"wrote {args.plot}")
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench load` to the `bench` command group."""
    parser = subcommands.add_parser("load", help="W1/W2/W3 or a concurrency sweep against live sidecars, "
                                                 "batched and serial side by side, plus the in-process ceiling")
    parser.add_argument("--data", default=default_data_dir(), help="directory with bm25-top100.json and qrels.txt")
    parser.add_argument("--model", default="minilm-cross-encoder",
                        help="builtin, minilm-cross-encoder (MiniLM-L6-shaped, built offline), qwen3-0.6b "
                             "(Qwen3-Reranker-0.6B-shaped, built offline), or a model path/id")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--quantize", default="auto",
                        help="RERANK_QUANTIZE of the sidecars; comma-separated (e.g. auto,int8) runs each side by side")
    parser.add_argument("--schedulers", default="batched,serial", help="comma-separated: batched,serial")
    parser.add_argument("--one-lock", action="store_true",
                        help="also run the seed's design (FastAPI + one asyncio.Lock + sentence-transformers "
                             "CrossEncoder, bench/onelock.py) on the same cross-encoder, side by side")
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated subset of W1,W2,W3")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every workload's request count")
    parser.add_argument("--w1-documents", type=int, default=100, help="documents per W1 request (default 100)")
    parser.add_argument("--prefix-reuse", choices=["on", "off", "on,off"],
                        help="Qwen3 models: serve with RERANK_QWEN3_PREFIX_REUSE on and/or off side by side")
    parser.add_argument("--sweep", help="comma-separated concurrencies (e.g. 1,2,4,8,16,32): run a sweep instead")
    parser.add_argument("--sweep-documents", type=int, default=5, help="documents per request in a sweep")
    parser.add_argument("--sweep-requests", type=int, default=8, help="requests per client at each sweep point")
    parser.add_argument("--ray-replicas",
                        help="comma-separated replica counts (e.g. 1,2): serve on Ray Serve (extra [ray]) with each")
    parser.add_argument("--ray-replica-cpus", type=float, default=1.0,
                        help="with --ray-replicas: CPUs (and inference threads) per replica (default 1)")
    parser.add_argument("--max-seconds", type=float, default=180.0, help="stop sending after this long per workload")
    parser.add_argument("--warm-up-clients", type=int, default=0,
                        help="requests per workload in the untimed warm-up burst (default 0: one per client)")
    parser.add_argument("--ceiling-pairs", type=int, default=512, help="pairs for the in-process ceiling (0: skip)")
    parser.add_argument("--cache-dir", help="where the built benchmark model and ONNX files are cached")
    parser.add_argument("--threads", type=int, default=0,
                        help="RERANK_THREADS of the sidecars and the in-process ceiling (default 0: every core)")
    parser.add_argument("--json", dest="json_out", help="write the results to this JSON file")
    parser.add_argument("--plot", help="write a PNG of latency and throughput against concurrency (sweeps)")
    parser.set_defaults(handler=_run)
