"""`rerank-sidecar bench <name>`: one sub-command per module of rerank_sidecar/bench, named like it.

Each bench module exposes `add_parser(subcommands)`, which adds its own sub-command and sets
`handler` on it; listing the module's name in BENCH_MODULES wires it in. Keep each module's top
level light (import torch and friends inside the handler) so that `rerank-sidecar --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib

# One bench module per name, under rerank_sidecar.bench; add yours on its own line.
BENCH_MODULES: tuple[str, ...] = (
    "backends",
    "qwen3",
    "load",
    "quality",
    "int8_cosine",
    "memory",
    "models",
    "embed",
    "report",
)


def add_bench(commands: argparse._SubParsersAction) -> None:
    """Adds `bench` with one sub-command per module of BENCH_MODULES."""
    bench = commands.add_parser("bench", help="benchmarks: speed of backends, quality, load, memory, embeddings")
    subcommands = bench.add_subparsers(dest="bench_command", required=True)
    for name in BENCH_MODULES:
        importlib.import_module(f"rerank_sidecar.bench.{name}").add_parser(subcommands)
