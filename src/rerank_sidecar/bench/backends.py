"""`rerank-sidecar bench backends`: torch fp32, onnx fp32 and onnx int8 side by side, in-process.

Speed: pairs/s of a MiniLM-L6-shaped cross-encoder (bench/stand_ins.py) on the same TREC DL 2020
pairs for every backend, tokenization included, batched as the engine batches. Quality: NDCG@10
of the embedded bi-encoder on each backend, so a backend that is fast because it is wrong shows.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from ..config import Settings
from ..engine.budget import BatchBudget
from ..models.base import Scorer
from .inprocess import score_benchmark, score_topic
from .trec import Benchmark, Topic, default_data_dir, evaluate, load_benchmark

# Piped output (a log, CI) gets room for the whole table instead of the 80-column default.
console = Console(width=None if sys.stdout.isatty() else 120)


class BackendConfig(BaseModel):
    """One runtime and precision to measure."""

    name: str = Field(description="Label in the report, e.g. onnx-int8.")
    backend: str = Field(description="RERANK_BACKEND value.")
    quantize: str = Field(description="RERANK_QUANTIZE value.")
    prefix_reuse: bool = Field(True, description="RERANK_QWEN3_PREFIX_REUSE value (Qwen3 models only).")


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
    seconds: float = Field(description="Wall time of one scoring pass over the pairs, tokenization included (median).")
    pairs_per_s: float = Field(description="pairs / seconds: the median pass.")
    passes_pairs_per_s: list[float] = Field(description="pairs/s of each timed pass, in the order they ran.")
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
    parser.add_argument("--passes", type=int, default=3,
                        help="timed passes over the pairs per backend, the backends taking turns (default 3)")
    parser.add_argument(
        "--quality-topics", type=int, default=54, help="TREC topics (100 passages each) for NDCG@10; 0 skips it"
    )
    parser.add_argument("--model", default="minilm-cross-encoder", choices=["minilm-cross-encoder", "qwen3-0.6b"],
                        help="qwen3-0.6b: Qwen3-Reranker-0.6B's shape, fp32 full prompts / prefix reuse / int8, "
                             "and peak RSS per precision (use a small --pairs: about 1 pair/s on 2 cores)")
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


@dataclass
class _Loaded:
    """One backend's scorer, ready to time."""

    config: BackendConfig
    """Which backend."""
    scorer: Scorer
    """The loaded model."""
    budget: BatchBudget
    """Batching as the engine would batch on the scorer's device."""
    load_s: float
    """Seconds the load took."""


def _load(config: BackendConfig, model_name: str, cache_dir: Path, warm_up: Topic) -> _Loaded:
    from ..models.registry import load_scorer  # torch: only when a benchmark runs

    settings = Settings(model_name=model_name, backend=config.backend, quantize=config.quantize, cache_dir=cache_dir,
                        qwen3_prefix_reuse=config.prefix_reuse)
    started = time.perf_counter()
    scorer = load_scorer(settings)
    load_s = time.perf_counter() - started
    budget = BatchBudget.for_scorer(settings, scorer.info)
    score_topic(scorer, warm_up.query, [c.text for c in warm_up.candidates[:8]], budget)  # one-off costs, not timed
    return _Loaded(config, scorer, budget, load_s)


def measure(configs: Sequence[BackendConfig], model_name: str, label: str, benchmark: Benchmark, cache_dir: Path,
            passes: int, judge: bool) -> list[BackendResult]:
    """Loads the model on every backend, then times `passes` passes over `benchmark`, the backends taking turns.

    Taking turns spreads the machine's drift over all backends alike; each backend's figure is its
    median pass. With `judge`, NDCG@10 of the scores (the same on every pass) is reported too.
    """
    loaded = [_load(config, model_name, cache_dir, benchmark.topics[0]) for config in configs]
    seconds: dict[str, list[float]] = {config.name: [] for config in configs}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for _ in range(passes):
        for backend in loaded:
            started = time.perf_counter()
            scores[backend.config.name] = score_benchmark(backend.scorer, benchmark, backend.budget)
            seconds[backend.config.name].append(time.perf_counter() - started)
    results = [_result(backend, label, benchmark, seconds[backend.config.name],
                       evaluate(benchmark, scores[backend.config.name]).ndcg10 if judge else None)
               for backend in loaded]
    for backend in loaded:
        backend.scorer.close()
    del loaded
    gc.collect()
    return results


def _result(backend: _Loaded, label: str, benchmark: Benchmark, seconds: list[float], ndcg10: float | None
            ) -> BackendResult:
    tokens = [
        len(pair.input_ids)
        for topic in benchmark.topics
        for doc in backend.scorer.encode(topic.query, [c.text for c in topic.candidates], None, "truncate", 1)
        for pair in doc.windows
    ]
    rates = [len(tokens) / s for s in seconds]
    median = float(np.median(seconds))
    console.log(f"{label} {backend.config.name}: {len(tokens) / median:.1f} pairs/s "
                f"(passes {', '.join(f'{rate:.1f}' for rate in rates)}; load {backend.load_s:.1f} s)")
    return BackendResult(
        backend=backend.config.name,
        model=label,
        pairs=len(tokens),
        mean_tokens=round(sum(tokens) / len(tokens), 1),
        seconds=round(median, 3),
        pairs_per_s=round(len(tokens) / median, 2),
        passes_pairs_per_s=[round(rate, 2) for rate in rates],
        load_s=round(backend.load_s, 3),
        details=dict(backend.scorer.info.details),
        ndcg10=round(ndcg10, 4) if ndcg10 is not None else None,
    )


def run(args: argparse.Namespace) -> int:
    from ..config import BUILTIN_MODEL_ID
    from ..models.device import inference_threads
    from ..models.resolve import force_offline
    from .stand_ins import build_minilm_cross_encoder

    force_offline()
    settings = Settings()
    if args.model == "qwen3-0.6b":
        return _run_qwen3(args, settings)
    benchmark = load_benchmark(Path(args.data))
    cross_encoder = build_minilm_cross_encoder(settings.cache_dir / "bench" / "minilm-l6-cross-encoder")
    speed_pairs = first_pairs(benchmark, args.pairs)
    pairs = sum(len(topic.candidates) for topic in speed_pairs.topics)
    console.print(f"speed: {pairs} pairs per backend and pass, {args.passes} passes, MiniLM-L6-shaped cross-encoder")
    speed = measure(CONFIGS, str(cross_encoder), "minilm-cross-encoder", speed_pairs, settings.cache_dir,
                    args.passes, judge=False)
    quality: list[BackendResult] = []
    if args.quality_topics > 0:
        topics = benchmark.limited(args.quality_topics, None)
        console.print(f"quality: {len(topics.topics)} topics x 100 passages per backend, embedded bi-encoder")
        quality = measure(CONFIGS, BUILTIN_MODEL_ID, "builtin-bi-encoder", topics, settings.cache_dir, 1, judge=True)
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


def _run_qwen3(args: argparse.Namespace, settings: Settings) -> int:
    from ..models.device import inference_threads
    from .qwen3 import run_qwen3

    threads = inference_threads(settings.threads)
    report = run_qwen3(Path(args.data), args.pairs, args.passes, settings.cache_dir, threads)
    console.print(f"Qwen3-0.6B shape: prefix reuse / full prompts = {report.reuse_over_full}x, "
                  f"int8 with reuse / fp32 full prompts = {report.int8_reuse_over_full}x")
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
