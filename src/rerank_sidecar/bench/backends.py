"""`rerank-sidecar bench backends`: torch fp32, onnx fp32 and onnx int8 side by side, in-process.

Speed: pairs/s of a MiniLM-L6-shaped cross-encoder (support/stand_ins.py) on the same TREC DL 2020
pairs for every backend, tokenization included, batched as the engine batches. Quality: NDCG@10
of the embedded bi-encoder on each backend, so a backend that is fast because it is wrong shows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from .support.data import add_data_argument, first_pairs
from .support.output import add_json_argument, console, write_json
from .support.results import BackendResult, BackendsReport
from .support.stand_ins import MINILM_STAND_IN, add_cache_dir_argument, bench_cache_dir, stand_in
from .support.timing import BackendConfig, measure

CONFIGS = (
    BackendConfig(name="torch-fp32", backend="torch", quantize="none"),
    BackendConfig(name="onnx-fp32", backend="onnx", quantize="none"),
    BackendConfig(name="onnx-int8", backend="onnx", quantize="int8"),
)


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench backends` to the `bench` command group."""
    parser = subcommands.add_parser(
        "backends", help="in-process pairs/s and NDCG@10 of torch fp32, onnx fp32 and onnx int8 on TREC DL pairs"
    )
    add_data_argument(parser)
    parser.add_argument("--pairs", type=int, default=600, help="cross-encoder pairs timed per backend (default 600)")
    parser.add_argument("--passes", type=int, default=3,
                        help="timed passes over the pairs per backend, the backends taking turns (default 3)")
    parser.add_argument(
        "--quality-topics", type=int, default=54, help="TREC topics (100 passages each) for NDCG@10; 0 skips it"
    )
    add_cache_dir_argument(parser)
    add_json_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..config import BUILTIN_MODEL_ID, Settings
    from ..evaluation.trec import load_benchmark
    from ..models.device import inference_threads

    cache = bench_cache_dir(args)
    benchmark = load_benchmark(Path(args.data))
    cross_encoder = stand_in(MINILM_STAND_IN, cache)
    speed_pairs = first_pairs(benchmark, args.pairs)
    pairs = sum(len(topic.candidates) for topic in speed_pairs.topics)
    console.print(f"speed: {pairs} pairs per backend and pass, {args.passes} passes, MiniLM-L6-shaped cross-encoder")
    speed = measure(CONFIGS, str(cross_encoder), MINILM_STAND_IN, speed_pairs, cache, args.passes, judge=False)
    quality: list[BackendResult] = []
    if args.quality_topics > 0:
        topics = benchmark.limited(args.quality_topics, None)
        console.print(f"quality: {len(topics.topics)} topics x 100 passages per backend, embedded bi-encoder")
        quality = measure(CONFIGS, BUILTIN_MODEL_ID, "builtin-bi-encoder", topics, cache, 1, judge=True)
    report = BackendsReport(
        threads=inference_threads(Settings().threads),
        speed=speed,
        quality=quality,
        int8_over_torch=round(speed[2].pairs_per_s / speed[0].pairs_per_s, 2),
    )
    console.print(_table(report))
    write_json(report, args.json_out)
    return 0


def _table(report: BackendsReport) -> Table:
    title = f"backends, in-process, {report.threads} threads: onnx-int8 / torch-fp32 = {report.int8_over_torch}x"
    table = Table(title=title)
    for column in ("model", "backend", "pairs", "mean tokens", "pairs/s", "load s", "onnx cache", "NDCG@10"):
        table.add_column(column, justify="left" if column in ("model", "backend") else "right")
    for result in report.speed + report.quality:
        table.add_row(
            result.model,
            result.backend,
            str(result.pairs),
            f"{result.mean_tokens:.1f}",
            f"{result.pairs_per_s:.1f}",
            f"{result.load_s:.1f}",
            {"true": "hit", "false": "built"}.get(result.details.get("onnx_cache_hit", ""), "-"),
            f"{result.ndcg10:.4f}" if result.ndcg10 is not None else "-",
        )
    return table
