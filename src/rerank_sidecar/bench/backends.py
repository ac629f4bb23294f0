"""`rerank-sidecar bench backends`: torch fp32, onnx fp32 and onnx int8 side by side, in-process.

Speed: pairs/s of a MiniLM-L6-shaped cross-encoder (bench/models.py) on the same TREC DL 2020
pairs for every backend, tokenization included, batched as the engine batches. Quality: NDCG@10
of the embedded bi-encoder on each backend, so a backend that is fast because it is wrong shows.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from .trec import Benchmark, Topic, default_data_dir, load_benchmark

# Piped output (a log, CI) gets room for the whole table instead of the 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)


class BackendConfig(BaseModel):
    """One runtime and precision to measure."""

    name: str = Field(description="Label in the report, e.g. onnx-int8.")
    backend: str = Field(description="RERANK_BACKEND value.")
    quantize: str = Field(description="RERANK_QUANTIZE value.")


CONFIGS = (
    BackendConfig(name="torch-fp32", backend="torch", quantize="none"),
    BackendConfig(name="onnx-fp32", backend="onnx", quantize="none"),
    BackendConfig(name="onnx-int8", backend="onnx", quantize="int8"),
)


class BackendResult(BaseModel):
    """What one backend did on one model."""

    backend: str = Field(description="Configuration label (torch-fp32, onnx-fp32, onnx-int8).")
    model: str = Field(description="Which model: minilm-cross-encoder (speed) or the embedded bi-encoder (quality).")
    pairs: int = Field(description="Pairs scored.")
    mean_tokens: float = Field(description="Mean tokens per scored pair (document tokens for the bi-encoder).")
    seconds: float = Field(description="Wall time of the scoring, tokenization included.")
    pairs_per_s: float = Field(description="pairs / seconds.")
    load_s: float = Field(description="Seconds to load the scorer (including an ONNX export on a cache miss).")
    details: dict[str, str] = Field(description="The scorer's ScorerInfo.details (ONNX file, cache hit, threads).")
    ndcg10: float | None = Field(None, description="Mean NDCG@10 over the scored topics (quality runs only).")


class BackendsReport(BaseModel):
    """The whole run: speed on the cross-encoder, quality (and speed) on the embedded model."""

    threads: int = Field(description="Intra-op threads every backend used.")
    speed: list[BackendResult] = Field(description="MiniLM-L6-shaped cross-encoder, same pairs for each backend.")
    quality: list[BackendResult] = Field(description="Embedded bi-encoder on TREC DL 2020 topics.")
    int8_over_torch: float = Field(description="onnx-int8 pairs/s divided by torch-fp32 pairs/s (cross-encoder).")


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench backends` to the `bench` command group."""
    parser = subcommands.add_parser(
        "backends", help="in-process pairs/s and NDCG@10 of torch fp32, onnx fp32 and onnx int8 on TREC DL pairs"
    )
    parser.add_argument("--data", default=default_data_dir(), help="directory with bm25-top100.json and qrels.txt")
    parser.add_argument("--pairs", type=int, default=600, help="cross-encoder pairs timed per backend (default 600)")
    parser.add_argument(
        "--quality-topics", type=int, default=54, help="TREC topics (100 passages each) for NDCG@10; 0 skips it"
    )
    parser.add_argument("--json", dest="json_out", help="also write the report to this JSON file")
    parser.set_defaults(handler=run)


def first_pairs(benchmark: Benchmark, pairs: int) -> Benchmark:
    """The first `pairs` (query, passage) pairs in file order, as a smaller benchmark."""
    topics: list[Topic] = []
    left = pairs
    for topic in benchmark.topics:
        if left <= 0:
            break
        topics.append(Topic(topic.qid, topic.query, topic.candidates[:left]))
        left -= len(topics[-1].candidates)
    return Benchmark(tuple(topics), benchmark.qrels)


def measure(
    config: BackendConfig, model_name: str, label: str, benchmark: Benchmark, cache_dir: Path, judge: bool
) -> BackendResult:
    """Loads the model on one backend, scores every pair of `benchmark` once (NDCG@10 when `judge`), frees it."""
    from ..config import Settings
    from ..engine.scheduler import BatchBudget
    from ..models.registry import load_scorer
    from .inprocess import score_benchmark, score_topic
    from .trec import evaluate

    settings = Settings(model_name=model_name, backend=config.backend, quantize=config.quantize, cache_dir=cache_dir)
    started = time.perf_counter()
    scorer = load_scorer(settings)
    load_s = time.perf_counter() - started
    budget = BatchBudget.for_device(settings, scorer.info.device)
    first = benchmark.topics[0]
    score_topic(scorer, first.query, [c.text for c in first.candidates[:8]], budget)  # warm-up, not timed
    started = time.perf_counter()
    scores = score_benchmark(scorer, benchmark, budget)
    seconds = time.perf_counter() - started
    tokens = [
        pair.cost
        for topic in benchmark.topics
        for doc in scorer.encode(topic.query, [c.text for c in topic.candidates], None, "truncate", 1)
        for pair in doc.windows
    ]
    details = dict(scorer.info.details)
    console.log(f"{label} {config.name}: {len(tokens) / seconds:.1f} pairs/s (load {load_s:.1f} s)")
    scorer.close()
    del scorer
    gc.collect()
    return BackendResult(
        backend=config.name,
        model=label,
        pairs=len(tokens),
        mean_tokens=round(sum(tokens) / len(tokens), 1),
        seconds=round(seconds, 3),
        pairs_per_s=round(len(tokens) / seconds, 2),
        load_s=round(load_s, 3),
        details=details,
        ndcg10=round(evaluate(benchmark, scores).ndcg10, 4) if judge else None,
    )


def run(args: argparse.Namespace) -> int:
    from ..config import BUILTIN_MODEL_ID, Settings
    from ..models.device import inference_threads
    from ..models.resolve import force_offline
    from .models import build_minilm_cross_encoder

    force_offline()
    settings = Settings()
    benchmark = load_benchmark(Path(args.data))
    cross_encoder = build_minilm_cross_encoder(settings.cache_dir / "bench" / "minilm-l6-cross-encoder")
    speed_pairs = first_pairs(benchmark, args.pairs)
    pairs = sum(len(topic.candidates) for topic in speed_pairs.topics)
    console.print(f"speed: {pairs} pairs per backend, MiniLM-L6-shaped cross-encoder")
    speed = [
        measure(c, str(cross_encoder), "minilm-cross-encoder", speed_pairs, settings.cache_dir, judge=False)
        for c in CONFIGS
    ]
    quality: list[BackendResult] = []
    if args.quality_topics > 0:
        topics = benchmark.limited(args.quality_topics, None)
        console.print(f"quality: {len(topics.topics)} topics x 100 passages per backend, embedded bi-encoder")
        quality = [
            measure(c, BUILTIN_MODEL_ID, "builtin-bi-encoder", topics, settings.cache_dir, judge=True) for c in CONFIGS
        ]
    report = BackendsReport(
        threads=inference_threads(settings.threads),
        speed=speed,
        quality=quality,
        int8_over_torch=round(speed[2].pairs_per_s / speed[0].pairs_per_s, 2),
    )
    console.print(_table(report))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report.model_dump(), indent=2))
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
