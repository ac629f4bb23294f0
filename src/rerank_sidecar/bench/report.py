"""`rerank-sidecar bench report`: BENCHMARKS.md from the JSON results of the other bench commands."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from .support.output import ms_cell
from .support.results import (
    BackendsReport,
    EmbedReport,
    Int8CosineReport,
    LoadReport,
    MemoryReport,
    ModelsLoadReport,
    QualityReport,
    Qwen3Report,
)
from .support.stand_ins import QWEN3_STAND_IN

# File names `scripts/bench.sh` writes into the results directory.
RESULT_FILES = {
    "quality": "quality.json",
    "int8_cosine": "int8-cosine.json",
    "backends": "backends.json",
    "load": "load.json",
    "sweep": "sweep.json",
    "ray": "ray.json",
    "ab": "ab.json",
    "builtin": "builtin.json",
    "memory": "memory.json",
    "models_load": "models-load.json",
    "qwen3": "qwen3.json",
    "qwen3-load": "qwen3-load.json",
    "qwen3-load-w2": "qwen3-load-w2.json",
    "embed": "embed.json",
    "embed-soak": "embed-soak.json",
}
SWEEP_PLOT = "sweep.png"


def _machine() -> str:
    import psutil

    from ..models.device import available_cores

    memory = psutil.virtual_memory().total / 2**30
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {available_cores()} cores available, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def _versions() -> str:
    names = ("rerank-sidecar", "torch", "transformers", "onnxruntime", "fastapi", "uvicorn")
    return ", ".join(f"{name} {version(name)}" for name in names) + f", Python {platform.python_version()}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def _quality(report: QualityReport) -> list[str]:
    lines = [f"## Ranking quality: TREC DL 2020 ({report.topics} queries x {report.candidates} BM25 candidates)", "",
             f"Model served: `{report.model}`. Positional = the BM25 order (what a consumer without a reranker uses).",
             ""]
    lines += _table(["ranker", "NDCG@10", "MRR@10", "Recall@10"],
                    [[r.ranker, f"{r.ndcg10:.4f}", f"{r.mrr10:.4f}", f"{r.recall10:.4f}"] for r in report.rows])
    if report.max_score_difference is not None:
        lines += [f"Largest sidecar vs in-process raw score difference: {report.max_score_difference:.1e}.", ""]
    return lines


def _int8_cosine(report: Int8CosineReport) -> list[str]:
    return [f"## Embedding quality of int8: {report.passages} TREC DL 2020 passages", "",
            f"Model: `{report.model}`. Each distinct passage embedded in fp32 and in int8 through `Engine.embed` "
            "(`bench int8-cosine`); the cosine of each passage's int8 vector with its fp32 one:", "",
            *_table(["min", "mean", "1st percentile"],
                    [[f"{report.min_cosine:.4f}", f"{report.mean_cosine:.4f}", f"{report.p01_cosine:.4f}"]])]


def _backends(report: BackendsReport) -> list[str]:
    lines = [f"## Backends in-process ({report.threads} threads)", "",
             "Speed: MiniLM-L6-shaped cross-encoder (the embedded model's encoder with an untrained head), "
             "the same TREC DL 2020 pairs for each backend; pairs/s is the median of "
             f"{len(report.speed[0].passes_pairs_per_s)} passes, the backends taking turns. " + _quality_sentence(report), ""]
    lines += _table(["backend", "model", "pairs", "mean tokens", "pairs/s", "each pass", "load s", "NDCG@10"],
                    [[r.backend, r.model, str(r.pairs), f"{r.mean_tokens:.0f}", f"{r.pairs_per_s:.1f}",
                      " / ".join(f"{rate:.1f}" for rate in r.passes_pairs_per_s),
                      f"{r.load_s:.1f}", "" if r.ndcg10 is None else f"{r.ndcg10:.4f}"]
                     for r in [*report.speed, *report.quality]])
    lines += [f"onnx int8 / torch fp32 pairs/s: **{report.int8_over_torch:.2f}x**.", ""]
    return lines


def _quality_sentence(report: BackendsReport) -> str:
    """What the quality rows measured; each query brings its 100 BM25 candidates."""
    if not report.quality:
        return "Quality: not measured in this run (--quality-topics 0)."
    return (f"Quality: the embedded bi-encoder on {report.quality[0].pairs // 100} TREC DL 2020 queries x 100 BM25 "
            "candidates (the full set is 54).")


def _load(report: LoadReport, title: str) -> list[str]:
    lines = [f"## {title}: `{report.model}`, backend {report.backend}, quantize {report.quantize}", ""]
    lines += _table(["scheduler", "workload", "clients", "docs/req", "ok", "503", "pairs/s", "req/s", "p50 ms",
                     "p95 ms", "p99 ms"],
                    [[r.configuration, r.workload, str(r.concurrency), str(r.documents), str(r.requests),
                      str(r.rejected), f"{r.pairs_per_s:.1f}", f"{r.requests_per_s:.1f}", f"{r.p50_ms:.0f}",
                      f"{r.p95_ms:.0f}", f"{r.p99_ms:.0f}"] for r in report.results])
    if report.ray_replica_cpus is not None:
        lines += [f"Each Ray replica: {report.ray_replica_cpus:g} CPU and as many inference threads.", ""]
    return lines + [f"- {line}" for line in report.comparisons()] + [""]


def _models_load(report: ModelsLoadReport) -> list[str]:
    lines = [f"## Two models in one sidecar under load (`bench models`): {' + '.join(report.models)}", "",
             "W2's 5-document requests: half the clients ask for each model of one sidecar at once (`together`); "
             "each model alone gets all of W2 on a sidecar of its own (`alone`).", ""]
    lines += _table(["config", "clients", "docs", "ok", "503", "pairs/s", "p50 ms", "p99 ms"],
                    [[r.configuration, str(r.concurrency), str(r.documents), str(r.requests), str(r.rejected),
                      f"{r.pairs_per_s:.1f}", f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}"]
                     for r in [*report.together, *report.alone]])
    return lines + [f"- {line.strip()}" for line in report.comparisons()] + [""]


def _memory(report: MemoryReport) -> list[str]:
    lines = [f"## Memory: one sidecar vs N in-process copies (`{report.model}`)", "",
             "Sidecar rows: the sidecar plus N thin HTTP client processes. In-process rows: N processes that each "
             "load the model. PSS splits shared pages between processes, so it adds up across them.", ""]
    lines += _table(["consumers", "layout", "RSS MiB", "PSS MiB"],
                    [[str(r.consumers), r.layout, f"{r.rss_mib:.0f}", f"{r.pss_mib:.0f}"] for r in report.rows])
    return lines + _models_memory(report) if report.models else lines


def _models_memory(report: MemoryReport) -> list[str]:
    rows = {row.layout: row.rss_mib for row in report.models}
    both, apart = rows["one sidecar, both models loaded"], rows["two sidecars, one model each"]
    unloaded, empty = rows["the same sidecar, both unloaded by keep-alive"], rows["a sidecar that never loaded a model"]
    lines = ["### Two models in one sidecar (`bench memory --models`)", "",
             "The embedded default and the MiniLM-shaped cross-encoder (RERANK_MODELS), both warm; the same sidecar "
             "after RERANK_KEEP_ALIVE_S unloaded both; and a sidecar that never loaded a model.", ""]
    lines += _table(["layout", "processes", "RSS MiB"],
                    [[row.layout, str(row.processes), f"{row.rss_mib:.0f}"] for row in report.models])
    return lines + [f"- one sidecar / two sidecars: {both / apart:.2f}x RSS",
                    f"- after keep-alive unloaded both / never loaded: {unloaded / empty:.2f}x RSS", ""]


def _embed(report: EmbedReport) -> list[str]:
    lines = [f"## Embeddings (`bench embed`): the embedded default, {report.threads} threads", "",
             "DL20 texts. E1: 4 clients sending 64 passages a request; E2: 32 clients sending one query a request; "
             "E2 mixed: E2 beside W1 reranking (4 clients x 100 passages) on the same sidecar. The sidecar on "
             "`/v1/embeddings`, Infinity 0.0.78 (torch, CPU) on `/embeddings`, sentence-transformers `encode` "
             "(batch 64) in-process. Each client holds its own connection, and the load generator's garbage "
             "collector is off while a counted run is timed (bench/support/traffic.py, `collector_paused`).", ""]
    lines += _table(["system", "workload", "clients", "texts/req", "ok", "failed", "texts/s", "p50 ms", "p99 ms"],
                    [[r.system, r.workload, str(r.concurrency), str(r.texts_per_request), str(r.requests),
                      str(r.failed), f"{r.texts_per_s:.1f}", ms_cell(r.p50_ms), ms_cell(r.p99_ms)]
                     for r in report.results])
    reranks = [r for r in (report.rerank_alone, report.rerank_mixed) if r is not None]
    if reranks:
        lines += _table(["reranking", "clients", "docs/req", "ok", "pairs/s", "p50 ms", "p99 ms"],
                        [[r.configuration, str(r.concurrency), str(r.documents), str(r.requests),
                          f"{r.pairs_per_s:.1f}", f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}"] for r in reranks])
    if report.cores:
        lines += _table(["while", "sidecar cores", "load generator cores"],
                        [[c.workload, f"{c.sidecar:.2f}", f"{c.load_generator:.2f}"] for c in report.cores])
    if report.memory:
        lines += _table(["memory (reranker stand-in + embedding model)", "processes", "RSS MiB"],
                        [[row.layout, str(row.processes), f"{row.rss_mib:.0f}"] for row in report.memory])
    return lines + [f"- {line}" for line in report.comparisons()] + [""]


def _embed_soak(report: EmbedReport) -> list[str]:
    if report.soak is None:
        return []
    soak = report.soak
    settled = [sample.rss_mib for sample in soak.samples if sample.at_s >= soak.settle_s]
    lines = [f"### Soak (`bench embed --soak-s`): E2 beside W1 on one sidecar for {soak.seconds:.0f} s", "",
             f"RSS sampled every few seconds ({len(soak.samples)} samples); after {soak.settle_s:.0f} s it ranged "
             f"{min(settled, default=float('nan')):.0f} to {max(settled, default=float('nan')):.0f} MiB.", ""]
    return lines + [f"- {line}" for line in report.comparisons() if line.startswith("soak")] + [""]


def _qwen3(report: Qwen3Report) -> list[str]:
    full = report.speed[0].pairs_per_s
    threads = f"{report.threads} thread" + ("s" if report.threads != 1 else "")
    title, model = _qwen3_model(report.model)
    lines = [f"## {title} in-process ({threads})", "",
             f"{model}, the same TREC DL 2020 pairs for each configuration (one query's "
             f"passages); pairs/s is the median of {len(report.speed[0].passes_pairs_per_s)} passes, the "
             "configurations taking turns.", ""]
    lines += _table(["configuration", "pairs", "mean prompt tokens", "pairs/s", "each pass", "x fp32 full", "load s"],
                    [[r.backend, str(r.pairs), f"{r.mean_tokens:.0f}", f"{r.pairs_per_s:.2f}",
                      " / ".join(f"{rate:.2f}" for rate in r.passes_pairs_per_s), f"{r.pairs_per_s / full:.2f}x",
                      f"{r.load_s:.1f}"] for r in report.speed])
    lines += [f"Prefix reuse / full prompts: **{report.reuse_over_full:.2f}x**; int8 with reuse / fp32 full prompts: "
              f"**{report.int8_reuse_over_full:.2f}x**.", ""]
    if not report.memory:
        return lines
    lines += ["Peak RSS per precision, each in a fresh process (prefix reuse on): the model loaded, then the first "
              "batch the engine plans for DL20's first query.", ""]
    return lines + _table(["precision", "RSS loaded MiB", "peak RSS MiB", "batch pairs", "batch tokens"],
                          [[m.precision, f"{m.loaded_mib:.0f}", f"{m.peak_mib:.0f}", str(m.batch_pairs),
                            str(m.batch_tokens)] for m in report.memory])


def _qwen3_model(model: str) -> tuple[str, str]:
    """The section title of `bench qwen3`'s model, and a sentence saying what it is."""
    if model == QWEN3_STAND_IN:
        return "Qwen3-Reranker-0.6B shape", ("Qwen3-Reranker-0.6B's published config with random weights and the "
                                             "real Qwen3 tokenizer (`bench/support/stand_ins.py`)")
    return f"Qwen3 reranker `{model}`", f"The model at `{model}`"


def render(results: Path, plot_link: str | None) -> str:
    sections: list[str] = []
    loaders: dict[str, Callable[[str], list[str]]] = {
        "quality": lambda text: _quality(QualityReport.model_validate_json(text)),
        "int8_cosine": lambda text: _int8_cosine(Int8CosineReport.model_validate_json(text)),
        "backends": lambda text: _backends(BackendsReport.model_validate_json(text)),
        "load": lambda text: _load(LoadReport.model_validate_json(text), "Load: W1, W2, W3"),
        "sweep": lambda text: _load(LoadReport.model_validate_json(text), "Concurrency sweep"),
        "ray": lambda text: _load(LoadReport.model_validate_json(text), "Ray Serve: 1 and 2 replicas"),
        "ab": lambda text: _load(LoadReport.model_validate_json(text), "A/B: the sidecar against the one-lock design"),
        "builtin": lambda text: _load(LoadReport.model_validate_json(text),
                                      "The embedded default: default settings and int8 side by side"),
        "memory": lambda text: _memory(MemoryReport.model_validate_json(text)),
        "models_load": lambda text: _models_load(ModelsLoadReport.model_validate_json(text)),
        "embed": lambda text: _embed(EmbedReport.model_validate_json(text)),
        "embed-soak": lambda text: _embed_soak(EmbedReport.model_validate_json(text)),
        "qwen3": lambda text: _qwen3(Qwen3Report.model_validate_json(text)),
        "qwen3-load": lambda text: _load(LoadReport.model_validate_json(text),
                                         "Qwen3-Reranker-0.6B shape through the sidecar, prefix reuse on and off"),
        "qwen3-load-w2": lambda text: _load(LoadReport.model_validate_json(text),
                                            "Qwen3-Reranker-0.6B shape, W2's shape in int8, prefix reuse on and off"),
    }
    for name, file_name in RESULT_FILES.items():
        path = results / file_name
        if path.is_file():
            sections += loaders[name](path.read_text())
            if name == "sweep" and plot_link:
                sections += [f"![latency and throughput against concurrency]({plot_link})", ""]
    header = [
        "# Benchmarks", "",
        "Written by `rerank-sidecar bench report` from the JSON results of the bench commands; "
        "reproduce everything with `scripts/bench.sh` (commands below).", "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {_machine()}",
        f"- Versions: {_versions()}", "",
    ]
    script = _bench_script()
    commands = ["## Reproduce", "", "```sh", *script.read_text().splitlines(), "```", ""] if script.is_file() else []
    return "\n".join(header + sections + commands)


def _bench_script() -> Path:
    return Path(__file__).resolve().parents[3] / "scripts" / "bench.sh"


def _run(args: argparse.Namespace) -> int:
    results = Path(args.results)
    out = Path(args.out)
    plot = results / SWEEP_PLOT
    plot_link = None
    if plot.is_file():
        target = out.parent / "docs" / "bench" / SWEEP_PLOT
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(plot.read_bytes())
        plot_link = str(target.relative_to(out.parent))
    out.write_text(render(results, plot_link))
    print(f"wrote {out}")
    return 0


def add_parser(subcommands: argparse._SubParsersAction) -> None:
    """Adds `bench report` to the `bench` command group."""
    parser = subcommands.add_parser("report", help="write BENCHMARKS.md from the bench commands' JSON results")
    parser.add_argument("--results", default="bench-results", help="directory holding the *.json results")
    parser.add_argument("--out", default="BENCHMARKS.md", help="Markdown file to write")
    parser.set_defaults(handler=_run)
