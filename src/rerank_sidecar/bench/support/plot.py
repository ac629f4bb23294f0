"""PNG plot of a concurrency sweep: latency (p50, p99) and throughput, one line per configuration."""

from __future__ import annotations

from pathlib import Path

from .results import LoadReport


def plot_sweep(report: LoadReport, target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.2))
    for configuration in dict.fromkeys(r.configuration for r in report.results):
        rows = sorted((r for r in report.results if r.configuration == configuration), key=lambda r: r.concurrency)
        x = [r.concurrency for r in rows]
        (line,) = latency.plot(x, [r.p50_ms for r in rows], marker="o", label=f"{configuration} p50")
        latency.plot(x, [r.p99_ms for r in rows], marker="x", linestyle="--", color=line.get_color(),
                     label=f"{configuration} p99")
        throughput.plot(x, [r.pairs_per_s for r in rows], marker="o", color=line.get_color(), label=configuration)
    for axes, ylabel in ((latency, "latency (ms)"), (throughput, "pairs / s")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("concurrent clients")
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        axes.legend()
    latency.set_yscale("log")
    figure.suptitle(f"rerank-sidecar load sweep: {report.model} ({report.backend})")
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
