"""The `rerank-sidecar` command, every sub-command in this package: serve, ensure, stop, rerank, calibrate, bench.

One module per sub-command family, each exposing `add_*(commands)`; COMMANDS wires them in. Keep the
modules' top level light (import torch and friends inside the handlers) so `rerank-sidecar --help` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .bench import add_bench
from .calibrate import add_calibrate
from .serve import add_serve
from .sidecar import add_ensure, add_rerank, add_stop

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_serve, add_calibrate, add_bench, add_ensure, add_stop, add_rerank,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rerank-sidecar", description="One local reranker shared by every process on the machine."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)
