"""`rerank-sidecar bench memory`: one shared sidecar versus N consumers each holding its own model copy."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from rich.progress import Progress
from rich.table import Table

from .support.output import add_json_argument, console, write_json
from .support.results import MemoryReport, MemoryRow, ModelsMemoryRow
from .support.servers import bench_server, memory_mib, settings_environment
from .support.stand_ins import TWO_MODELS, add_cache_dir_argument, bench_cache_dir, model_settings, two_models_settings

# A consumer that loads its own copy of the model and scores one pair, then waits to be measured.
_IN_PROCESS_CONSUMER = """
import sys
from rerank_sidecar.config import Settings
from rerank_sidecar.models.registry import load_scorer
from rerank_sidecar.models.resolve import force_offline
force_offline()
scorer = load_scorer(Settings())
documents = scorer.encode("what is a reranker", ["a model that orders documents"], None, "truncate", 1)
scorer.score_batch([documents[0].windows[0]])
print("ready", flush=True)
sys.stdin.read()
"""

# A consumer of the sidecar: an HTTP client process that has made one call.
_SIDECAR_CONSUMER = """
import sys, httpx
httpx.post(sys.argv[1] + "/rerank", json={"query": "what is a reranker",
           "documents": ["a model that orders documents"]}, timeout=120).raise_for_status()
print("ready", flush=True)
sys.stdin.read()
"""


def _start_consumers(n: int, script: str, env: dict[str, str], argv: Sequence[str] = ()) -> list[subprocess.Popen]:
    consumers = [
        subprocess.Popen([sys.executable, "-c", script, *argv], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(n)
    ]
    for consumer in consumers:
        if consumer.stdout is None or consumer.stdout.readline().strip() != "ready":
            raise RuntimeError("a consumer process failed before it was ready")
    return consumers


def _stop(consumers: Sequence[subprocess.Popen]) -> None:
    for consumer in consumers:
        consumer.kill()
        consumer.wait(10)


def measure(counts: Sequence[int], model: str, backend: str, cache_dir: Path) -> MemoryReport:
    settings = model_settings(model, backend, cache_dir)
    env = settings_environment(settings)
    rows: list[MemoryRow] = []
    with Progress(transient=True, console=console) as progress:
        task = progress.add_task("measuring memory", total=2 * len(counts))
        with bench_server(settings) as server:
            for n in counts:
                clients = _start_consumers(n, _SIDECAR_CONSUMER, env, [server.url])
                try:
                    rss, pss = memory_mib([server.pid, *(c.pid for c in clients)])
                finally:
                    _stop(clients)
                rows.append(MemoryRow(consumers=n, layout="sidecar", rss_mib=rss, pss_mib=pss))
                progress.advance(task)
        for n in counts:
            copies = _start_consumers(n, _IN_PROCESS_CONSUMER, env)
            try:
                time.sleep(0.5)
                rss, pss = memory_mib([c.pid for c in copies])
            finally:
                _stop(copies)
            rows.append(MemoryRow(consumers=n, layout="in-process", rss_mib=rss, pss_mib=pss))
            progress.advance(task)
    return MemoryReport(model=model, rows=rows)


# Keep-alive of the several-models sidecar: its models unload this long after the warm-up.
_KEEP_ALIVE_S = 3.0


def measure_models(backend: str, cache_dir: Path) -> list[ModelsMemoryRow]:
    """RSS of one sidecar serving both TWO_MODELS, of two sidecars serving one each, of the first after
    keep-alive unloaded both, and of a sidecar that never loaded a model."""
    alone, both = two_models_settings(backend, cache_dir)
    both["keep_alive_s"] = str(_KEEP_ALIVE_S)
    first_model, second_model = alone.values()
    rows = []
    with bench_server(both) as server:
        for name in TWO_MODELS[1:]:
            httpx.post(f"{server.url}/warmup", params={"model": name}, timeout=600).raise_for_status()
        rows.append(ModelsMemoryRow(layout="one sidecar, both models loaded", processes=1,
                                    rss_mib=memory_mib([server.pid])[0]))
        _wait_unloaded(server.url, len(TWO_MODELS))
        rows.append(ModelsMemoryRow(layout="the same sidecar, both unloaded by keep-alive", processes=1,
                                    rss_mib=memory_mib([server.pid])[0]))
    with bench_server(first_model) as first, bench_server(second_model) as second:
        rows.append(ModelsMemoryRow(layout="two sidecars, one model each", processes=2,
                                    rss_mib=memory_mib([first.pid, second.pid])[0]))
    with bench_server(both, warm=False) as empty:
        rows.append(ModelsMemoryRow(layout="a sidecar that never loaded a model", processes=1,
                                    rss_mib=memory_mib([empty.pid])[0]))
    return rows


def _wait_unloaded(url: str, models: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if sum(not model["loaded"] for model in health["models"]) == models:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the models of {url} were not unloaded within {timeout_s} s")


def print_memory(report: MemoryReport) -> None:
    table = Table(title=f"bench memory: {report.model}")
    for column in ("consumers", "layout", "RSS MiB", "PSS MiB"):
        table.add_column(column, justify="right")
    for row in report.rows:
        table.add_row(str(row.consumers), row.layout, f"{row.rss_mib:.0f}", f"{row.pss_mib:.0f}")
    console.print(table)
    if report.models:
        models = Table(title=f"bench memory --models: {' + '.join(TWO_MODELS)}")
        for column in ("layout", "processes", "RSS MiB"):
            models.add_column(column, justify="right")
        for row in report.models:
            models.add_row(row.layout, str(row.processes), f"{row.rss_mib:.0f}")
        console.print(models)


def _run(args: argparse.Namespace) -> int:
    cache = bench_cache_dir(args)
    report = measure([int(n) for n in args.consumers.split(",")], args.model, args.backend, cache)
    if args.models:
        report.models = measure_models(args.backend, cache)
    print_memory(report)
    write_json(report, args.json_out)
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench memory` to the `bench` command group."""
    parser = subcommands.add_parser("memory", help="RSS/PSS of one sidecar + N thin clients vs N in-process copies")
    parser.add_argument("--consumers", default="1,2,4", help="comma-separated consumer counts")
    parser.add_argument("--model", default="builtin", help="builtin, minilm-cross-encoder, or a model path/id")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    add_cache_dir_argument(parser)
    parser.add_argument("--models", action="store_true",
                        help="also: one sidecar serving two models vs two sidecars, and after keep-alive unloaded both")
    add_json_argument(parser)
    parser.set_defaults(handler=_run)
