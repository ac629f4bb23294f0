"""Qwen3-Reranker-0.6B's shape on this machine: pairs/s of full prompts, prefix reuse and int8, and peak RSS.

Run by `rerank-sidecar bench backends --model qwen3-0.6b`: the three configurations score the same TREC DL 2020
pairs in one process, taking turns; each precision's peak RSS is read in a fresh process of its own
(`python -m rerank_sidecar.bench.qwen3 ...`), so one model's pages never count against another's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from .backends import BackendConfig, BackendResult

QWEN3_MODEL = "qwen3-0.6b"
QWEN3_CONFIGS = (
    BackendConfig(name="fp32-full-prompts", backend="torch", quantize="none", prefix_reuse=False),
    BackendConfig(name="fp32-prefix-reuse", backend="torch", quantize="none"),
    BackendConfig(name="int8-prefix-reuse", backend="torch", quantize="int8"),
)
# Precisions whose peak RSS is measured (prefix reuse on): RERANK_DTYPE and RERANK_QUANTIZE values.
MEMORY_PRECISIONS = {"fp32": ("float32", "none"), "bf16": ("bfloat16", "none"), "int8": ("float32", "int8")}


class PeakMemory(BaseModel):
    """One precision's process memory: the model loaded, then one batch scored."""

    precision: str = Field(description="fp32, bf16 or int8.")
    loaded_mib: float = Field(description="RSS once the model is loaded (MiB).")
    peak_mib: float = Field(description="Peak RSS of the process over load and one batch (MiB).")
    batch_pairs: int = Field(description="Pairs in the scored batch.")
    batch_tokens: int = Field(description="Tokens of the scored batch's prompts, before padding.")


class Qwen3Report(BaseModel):
    """The run: the three configurations' speed side by side, and peak RSS per precision."""

    threads: int = Field(description="Intra-op threads.")
    speed: list[BackendResult] = Field(description="fp32 full prompts, fp32 prefix reuse, int8 prefix reuse.")
    reuse_over_full: float = Field(description="fp32 prefix reuse pairs/s / fp32 full prompts pairs/s.")
    int8_reuse_over_full: float = Field(description="int8 prefix reuse pairs/s / fp32 full prompts pairs/s.")
    memory: list[PeakMemory] = Field(description="Peak RSS per precision, each in a fresh process.")


def qwen3_model_dir(cache_dir: Path) -> Path:
    """The Qwen3-Reranker-0.6B-shaped benchmark model, built on first use and cached under `cache_dir`."""
    from .stand_ins import build_qwen3_reranker_0_6b

    return build_qwen3_reranker_0_6b(cache_dir / "bench-models" / "qwen3-reranker-0.6b-shape")


def run_qwen3(data: Path, pairs: int, passes: int, cache_dir: Path, threads: int) -> Qwen3Report:
    """Speed of the three configurations on the first `pairs` DL20 pairs, then peak RSS per precision."""
    from .backends import console, first_pairs, measure
    from .trec import load_benchmark

    model_dir = qwen3_model_dir(cache_dir)
    benchmark = first_pairs(load_benchmark(data), pairs)
    console.print(f"speed: {pairs} pairs per configuration and pass, {passes} passes, Qwen3-Reranker-0.6B shape")
    speed = measure(QWEN3_CONFIGS, str(model_dir), QWEN3_MODEL, benchmark, cache_dir, passes, judge=False)
    memory = [peak_memory(model_dir, precision, data) for precision in MEMORY_PRECISIONS]
    full = speed[0].pairs_per_s
    return Qwen3Report(threads=threads, speed=speed, reuse_over_full=round(speed[1].pairs_per_s / full, 2),
                       int8_reuse_over_full=round(speed[2].pairs_per_s / full, 2), memory=memory)


def peak_memory(model_dir: Path, precision: str, data: Path) -> PeakMemory:
    """Runs the probe below in a fresh process for one precision."""
    from .backends import console

    probe = subprocess.run([sys.executable, "-m", __name__, str(model_dir), precision, str(data)],
                           capture_output=True, text=True, check=True, timeout=900)
    result = PeakMemory.model_validate_json(probe.stdout.strip().splitlines()[-1])
    console.log(f"{QWEN3_MODEL} {precision}: {result.loaded_mib:.0f} MiB loaded, peak {result.peak_mib:.0f} MiB")
    return result


def _status_mib(field: str) -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _probe(model_dir: str, precision: str, data: str) -> None:
    """Loads the model at `precision`, scores the first batch the engine would plan for DL20's first query."""
    from ..config import Settings
    from ..engine.budget import BatchBudget
    from ..models.registry import load_scorer
    from ..models.resolve import force_offline
    from .trec import load_benchmark

    force_offline()
    dtype, quantize = MEMORY_PRECISIONS[precision]
    settings = Settings(model_name=model_dir, dtype=dtype, quantize=quantize)
    scorer = load_scorer(settings)
    loaded = _status_mib("VmRSS")
    topic = load_benchmark(Path(data)).topics[0]
    pairs = [doc.windows[0] for doc in scorer.encode(topic.query, [c.text for c in topic.candidates], None,
                                                      "truncate", 1)]
    plan = BatchBudget.for_scorer(settings, scorer.info).plan_pairs(pairs)
    batch = [pairs[index] for index in plan[0]]
    scorer.score_batch(batch)
    peak = _status_mib("VmHWM")
    print(json.dumps({"precision": precision, "loaded_mib": round(loaded, 1), "peak_mib": round(peak, 1),
                      "batch_pairs": len(batch), "batch_tokens": sum(len(pair.input_ids) for pair in batch)}))


if __name__ == "__main__":
    _probe(*sys.argv[1:4])
