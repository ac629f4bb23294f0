"""The benchmark data (TREC DL 2020): where it lives, the `--data` argument, and the slices the commands send."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from ...evaluation.trec import Benchmark, Topic, load_benchmark


def default_data_dir() -> str:
    """The TREC DL 2020 copy beside a source checkout (`../shared/data/trec-dl-2020`), or `$RERANK_BENCH_DATA`."""
    checkout = Path(__file__).resolve().parents[4]
    return os.environ.get("RERANK_BENCH_DATA", str(checkout.parent / "shared" / "data" / "trec-dl-2020"))


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """`--data`, the benchmark directory."""
    parser.add_argument("--data", default=default_data_dir(), help="directory with bm25-top100.json and qrels.txt")


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


@dataclass(frozen=True, slots=True)
class TrafficTexts:
    """What load traffic is made of: the benchmark's queries and all its passages."""

    queries: tuple[str, ...]
    """Queries in file order; requests take them in turn."""
    passages: tuple[str, ...]
    """Every candidate passage of every query; a request takes a run of them."""


def traffic_texts(data: str) -> TrafficTexts:
    """The queries and passages of the benchmark in directory `data`."""
    benchmark = load_benchmark(Path(data))
    return TrafficTexts(tuple(topic.query for topic in benchmark.topics),
                        tuple(candidate.text for topic in benchmark.topics for candidate in topic.candidates))
