"""`rerank-sidecar bench int8-cosine`: each passage's int8 vector against its fp32 one, as min and mean cosine.

Both vectors come from `Engine.embed`, the path the embedding routes take, for the model the environment
configures (RERANK_MODEL_NAME, ...; the embedded default unless set), once with RERANK_QUANTIZE=none and once
with RERANK_QUANTIZE=int8 on the backend RERANK_BACKEND picks (the embedded default: onnx).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import Progress

from ..evaluation.trec import Benchmark, load_benchmark
from ..models.base import ScorerInfo
from .support.data import add_data_argument
from .support.output import add_json_argument, console, write_json
from .support.results import Int8CosineReport

# Texts per embedding job: a progress step, well inside the queue bound.
TEXTS_PER_JOB = 256


def benchmark_passages(benchmark: Benchmark) -> list[str]:
    """Every distinct candidate passage, in file order."""
    return list(dict.fromkeys(candidate.text for topic in benchmark.topics for candidate in topic.candidates))


def embed_in_process(texts: Sequence[str], **overrides: str) -> tuple[np.ndarray, ScorerInfo]:
    """Vectors of `texts` from an in-process engine of the configured model (settings as a sidecar's, less
    `overrides`: setting field -> value), documents without a prompt; and the model that embedded them."""
    from ..config import Settings
    from ..engine.engine import EmbedJob, Engine
    from ..metrics import Metrics

    settings = Settings(**overrides)
    engine = Engine(settings, Metrics().for_model(settings.served_model_id))

    async def embed_all(progress: Progress) -> tuple[np.ndarray, ScorerInfo]:
        task = progress.add_task(f"embedding, RERANK_QUANTIZE={settings.quantize}", total=len(texts))
        outcomes = []
        for start in range(0, len(texts), TEXTS_PER_JOB):
            outcomes.append(await engine.embed(EmbedJob(texts[start : start + TEXTS_PER_JOB])))
            progress.advance(task, len(outcomes[-1].vectors))
        return np.concatenate([outcome.vectors for outcome in outcomes]), outcomes[-1].info

    try:
        with Progress(transient=True) as progress:
            return asyncio.run(embed_all(progress))
    finally:
        engine.stop()


def int8_cosines(texts: Sequence[str], **overrides: str) -> tuple[np.ndarray, str]:
    """The cosine of each text's int8 vector with its fp32 one, and the model's id."""
    fp32, info = embed_in_process(texts, **overrides, quantize="none")
    int8, int8_info = embed_in_process(texts, **overrides, quantize="int8")
    if int8_info.details.get("quantize") != "int8":
        raise ValueError(f"RERANK_QUANTIZE=int8 did not quantize {info.model} ({int8_info.details})")
    norms = np.linalg.norm(fp32, axis=1) * np.linalg.norm(int8, axis=1)
    return (fp32 * int8).sum(axis=1) / norms, info.model


def int8_cosine_report(data: str, max_passages: int | None, backend: str | None) -> Int8CosineReport:
    passages = benchmark_passages(load_benchmark(Path(data)))[:max_passages]
    overrides = {"backend": backend} if backend else {}
    cosines, model = int8_cosines(passages, **overrides)
    worst = int(np.argmin(cosines))
    return Int8CosineReport(
        data=data, model=model, backend=backend or "environment", passages=len(passages),
        min_cosine=float(cosines[worst]), mean_cosine=float(cosines.mean()),
        p01_cosine=float(np.quantile(cosines, 0.01)), worst_passage=passages[worst],
    )


def _run(args: argparse.Namespace) -> int:
    try:
        report = int8_cosine_report(args.data, args.max_passages, args.backend)
    except ValueError as exc:
        raise SystemExit(f"bench int8-cosine: {exc}") from exc
    console.print(
        f"bench int8-cosine: {report.model}, {report.passages} passages: int8 vs fp32 cosine min "
        f"{report.min_cosine:.4f}, mean {report.mean_cosine:.4f}, 1st percentile {report.p01_cosine:.4f}"
    )
    write_json(report, args.json_out)
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench int8-cosine` to the `bench` command group."""
    parser = subcommands.add_parser(
        "int8-cosine", help="embedding quality of int8: each passage's int8 vector against its fp32 one (min, mean)"
    )
    add_data_argument(parser)
    parser.add_argument("--max-passages", type=int, help="only the first N distinct passages")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"),
                        help="RERANK_BACKEND for both runs (default: the environment's)")
    add_json_argument(parser)
    parser.set_defaults(handler=_run)
