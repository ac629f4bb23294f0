"""`rerank-sidecar calibrate`: refits the embedded model's cosine -> [0, 1] map (rerank_sidecar/calibrate.py)."""

from __future__ import annotations

import argparse


def _calibrate(args: argparse.Namespace) -> int:
    from ..calibrate import main as calibrate_main

    return calibrate_main(args)


def add_calibrate(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate", help="refit the embedded model's cosine -> [0, 1] calibration on TREC DL judgements"
    )
    calibrate.add_argument("--data", required=True, help="directory with bm25-top100.json and qrels.txt")
    calibrate.set_defaults(handler=_calibrate)
