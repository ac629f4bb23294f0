"""TREC-style reranking data (BM25 candidates + qrels) and the ranking metrics computed on it."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# TREC DL passage judgements are graded 0-3; binary metrics count grade >= 2 as relevant.
RELEVANT_GRADE = 2


@dataclass(frozen=True, slots=True)
class Candidate:
    """One retrieved passage of a query."""

    docid: str
    """Passage id the qrels refer to."""
    text: str
    """Passage text."""


@dataclass(frozen=True, slots=True)
class Topic:
    """One judged query with its candidates in first-stage (BM25) order."""

    qid: str
    """Query id the qrels refer to."""
    query: str
    """Query text."""
    candidates: tuple[Candidate, ...]
    """Candidates, best BM25 rank first."""


@dataclass(frozen=True, slots=True)
class Benchmark:
    """Topics and their graded judgements."""

    topics: tuple[Topic, ...]
    """Queries in file order."""
    qrels: Mapping[str, Mapping[str, int]]
    """qid -> docid -> grade."""

    def limited(self, max_topics: int | None, max_candidates: int | None) -> Benchmark:
        """The first topics and candidates only, for quick runs."""
        topics = self.topics[:max_topics] if max_topics else self.topics
        if max_candidates:
            topics = tuple(Topic(t.qid, t.query, t.candidates[:max_candidates]) for t in topics)
        return Benchmark(topics, self.qrels)


def load_benchmark(directory: Path) -> Benchmark:
    """Reads `bm25-top100.json` and `qrels.txt` from `directory`; only judged queries are kept."""
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for line in (directory / "qrels.txt").read_text().splitlines():
        if line.strip():
            qid, _, docid, grade = line.split()
            qrels[qid][docid] = int(grade)
    topics = []
    for entry in json.loads((directory / "bm25-top100.json").read_text()):
        hits = sorted(entry["hits"], key=lambda hit: hit["rank"])
        qid = str(hits[0]["qid"])
        if qid in qrels:
            candidates = tuple(Candidate(str(hit["docid"]), hit["content"]) for hit in hits)
            topics.append(Topic(qid, entry["query"], candidates))
    return Benchmark(tuple(topics), dict(qrels))


def ndcg_at(ranking: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """trec_eval's ndcg_cut: gain = grade, discount log2(rank + 1), ideal over all judged passages."""
    dcg = sum(grades.get(docid, 0) / math.log2(rank + 2) for rank, docid in enumerate(ranking[:k]))
    ideal = sorted((grade for grade in grades.values() if grade > 0), reverse=True)[:k]
    idcg = sum(grade / math.log2(rank + 2) for rank, grade in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranking: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant (grade >= 2) passage within the top k."""
    for rank, docid in enumerate(ranking[:k]):
        if grades.get(docid, 0) >= RELEVANT_GRADE:
            return 1.0 / (rank + 1)
    return 0.0


def recall_at(ranking: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """Share of all relevant (grade >= 2) judged passages found in the top k."""
    relevant = {docid for docid, grade in grades.items() if grade >= RELEVANT_GRADE}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranking[:k])) / len(relevant)


@dataclass(frozen=True, slots=True)
class RankingQuality:
    """Mean metrics over a benchmark's topics."""

    ndcg10: float
    """Mean NDCG@10."""
    mrr10: float
    """Mean MRR@10."""
    recall10: float
    """Mean Recall@10."""


def evaluate(benchmark: Benchmark, scores: Mapping[str, Sequence[float]]) -> RankingQuality:
    """Ranks each topic's candidates by `scores[qid]` (ties keep first-stage order) and averages the metrics."""
    ndcg, mrr, recall = [], [], []
    for topic in benchmark.topics:
        topic_scores = scores[topic.qid]
        order = sorted(range(len(topic.candidates)), key=lambda i: -topic_scores[i])
        ranking = [topic.candidates[i].docid for i in order]
        grades = benchmark.qrels[topic.qid]
        ndcg.append(ndcg_at(ranking, grades))
        mrr.append(mrr_at(ranking, grades))
        recall.append(recall_at(ranking, grades))
    n = max(1, len(ndcg))
    return RankingQuality(sum(ndcg) / n, sum(mrr) / n, sum(recall) / n)


def positional_scores(benchmark: Benchmark) -> dict[str, list[float]]:
    """The first-stage order as scores, 1 / (1 + rank): what a consumer without a reranker uses."""
    return {t.qid: [1.0 / (1 + rank) for rank in range(len(t.candidates))] for t in benchmark.topics}

