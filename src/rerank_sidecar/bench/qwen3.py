"""`rerank-sidecar bench qwen3`: a Qwen3 reranker in-process, by default in Qwen3-Reranker-0.6B's shape.

Pairs/s of full prompts, prefix reuse and int8 on the same TREC DL 2020 pairs in one process, taking
turns; then each precision's peak RSS, read in a fresh process of its own (`python -m
rerank_sidecar.bench.qwen3 MODEL PRECISION DATA`), so one model's pages never count against another's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from .support.data import add_data_argument, first_pairs
from .support.output import add_json_argument, console, write_json
from .support.results import PeakMemory, Qwen3Report
from .support.stand_ins import QWEN3_STAND_IN, add_cache_dir_argument, bench_cache_dir, stand_in
from .support.timing import BackendConfig, measure

QWEN3_CONFIGS = (
    BackendConfig(name="fp32-full-prompts", backend="torch", quantize="none", prefix_reuse=False),
    BackendConfig(name="fp32-prefix-reuse", backend="torch", quantize="none"),
    BackendConfig(name="int8-prefix-reuse", backend="torch", quantize="int8"),
)
# Precisions whose peak RSS is measured (prefix reuse on): RERANK_DTYPE and RERANK_QUANTIZE values.
MEMORY_PRECISIONS = {"fp32": ("float32", "none"), "bf16": ("bfloat16", "none"), "int8": ("float32", "int8")}


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench qwen3` to the `bench` command group."""
    parser = subcommands.add_parser(
        "qwen3", help="in-process pairs/s of a Qwen3 reranker with full prompts, prefix reuse and int8, and peak RSS "
                      "per precision (Qwen3-Reranker-0.6B's shape by default)")
    add_data_argument(parser)
    parser.add_argument("--model", default=QWEN3_STAND_IN,
                        help=f"{QWEN3_STAND_IN} (Qwen3-Reranker-0.6B's shape, random weights, built offline) or the path "
                             "of a Qwen3 reranker")
    parser.add_argument("--pairs", type=int, default=16,
                        help="pairs timed per configuration (default 16: about 1 pair/s in fp32 on 2 cores)")
    parser.add_argument("--passes", type=int, default=2,
                        help="timed passes over the pairs per configuration, taking turns (default 2)")
    parser.add_argument("--memory-precisions", default=",".join(MEMORY_PRECISIONS),
                        help="comma-separated precisions whose peak RSS is read, each in a fresh process "
                             f"(default {','.join(MEMORY_PRECISIONS)}; '' skips it)")
    add_cache_dir_argument(parser)
    add_json_argument(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..config import Settings
    from ..evaluation.trec import load_benchmark
    from ..models.device import inference_threads

    precisions = [precision for precision in args.memory_precisions.split(",") if precision]
    if unknown := set(precisions) - set(MEMORY_PRECISIONS):
        raise SystemExit(f"bench qwen3: --memory-precisions knows {', '.join(MEMORY_PRECISIONS)}, "
                         f"not {', '.join(sorted(unknown))}")
    cache = bench_cache_dir(args)
    model_dir = stand_in(args.model, cache) if args.model == QWEN3_STAND_IN else Path(args.model)
    benchmark = first_pairs(load_benchmark(Path(args.data)), args.pairs)
    console.print(f"speed: {args.pairs} pairs per configuration and pass, {args.passes} passes, {args.model}")
    speed = measure(QWEN3_CONFIGS, str(model_dir), args.model, benchmark, cache, args.passes, judge=False)
    memory = [peak_memory(model_dir, args.model, precision, args.data) for precision in precisions]
    full = speed[0].pairs_per_s
    report = Qwen3Report(model=args.model, threads=inference_threads(Settings().threads), speed=speed,
                         reuse_over_full=round(speed[1].pairs_per_s / full, 2),
                         int8_reuse_over_full=round(speed[2].pairs_per_s / full, 2), memory=memory)
    console.print(f"{args.model}: prefix reuse / full prompts = {report.reuse_over_full}x, "
                  f"int8 with reuse / fp32 full prompts = {report.int8_reuse_over_full}x")
    write_json(report, args.json_out)
    return 0


def peak_memory(model_dir: Path, label: str, precision: str, data: str) -> PeakMemory:
    """Runs the probe below in a fresh process for one precision."""
    probe = subprocess.run([sys.executable, "-m", __name__, str(model_dir), precision, data],
                           capture_output=True, text=True, check=True, timeout=900)
    result = PeakMemory.model_validate_json(probe.stdout.strip().splitlines()[-1])
    console.log(f"{label} {precision}: {result.loaded_mib:.0f} MiB loaded, peak {result.peak_mib:.0f} MiB")
    return result


def _status_mib(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _probe(model_dir: str, precision: str, data: str) -> None:
    """Loads the model at `precision`, scores the first batch the engine would plan for DL20's first query."""
    from ..config import Settings
    from ..evaluation.inprocess import first_windows, load_batched, planned_batches
    from ..evaluation.trec import load_benchmark

    dtype, quantize = MEMORY_PRECISIONS[precision]
    scorer, budget = load_batched(Settings(model_name=model_dir, dtype=dtype, quantize=quantize))
    loaded = _status_mib("VmRSS")
    topic = load_benchmark(Path(data)).topics[0]
    pairs = first_windows(scorer, topic.query, [c.text for c in topic.candidates])
    batch = [pairs[index] for index in planned_batches(pairs, budget)[0]]
    scorer.score_batch(batch)
    peak = _status_mib("VmHWM")
    print(json.dumps({"precision": precision, "loaded_mib": round(loaded, 1), "peak_mib": round(peak, 1),
                      "batch_pairs": len(batch), "batch_tokens": sum(len(pair.input_ids) for pair in batch)}))


if __name__ == "__main__":
    _probe(*sys.argv[1:4])
