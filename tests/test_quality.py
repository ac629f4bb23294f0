"""Ranking quality of the embedded default on TREC DL 2020, through HTTP and in-process."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rerank_sidecar.bench.quality import score_via_sidecar
from rerank_sidecar.evaluation.trec import evaluate, load_benchmark, mrr_at, ndcg_at, positional_scores, recall_at

BM25_NDCG10 = 0.4796
# Queries scored through HTTP (of 54, each with all its candidates): a third of the set keeps the HTTP pass short.
HTTP_TOPICS = 18


def test_metrics_match_a_hand_computed_example() -> None:
    grades = {"a": 3, "b": 0, "c": 2, "d": 1, "e": 2}
    ranking = ["b", "c", "a", "x"]
    dcg = 0 / math.log2(2) + 2 / math.log2(3) + 3 / math.log2(4) + 0
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 2 / math.log2(4) + 1 / math.log2(5)
    assert math.isclose(ndcg_at(ranking, grades), dcg / idcg, rel_tol=1e-12)
    assert mrr_at(ranking, grades) == 0.5  # "c" (grade 2) at rank 2
    assert math.isclose(recall_at(ranking, grades), 2 / 3)  # a, c of {a, c, e}
    assert ndcg_at(["b", "x"], grades) == 0.0


def test_bm25_order_reproduces_the_reference_figure(trec_dir) -> None:
    benchmark = load_benchmark(trec_dir)
    assert len(benchmark.topics) == 54
    assert round(evaluate(benchmark, positional_scores(benchmark)).ndcg10, 4) == BM25_NDCG10


@pytest.mark.timeout(1500)
def test_embedded_model_beats_bm25_through_http_and_equals_in_process(
    builtin_sidecar, trec_dir, builtin_reference_scores
) -> None:
    """In-process on all of TREC DL 2020; through HTTP on a third of the queries (all their candidates),
    which must score as in-process to 1e-5, so the served ranking is the in-process one."""
    benchmark = load_benchmark(trec_dir)
    local = builtin_reference_scores
    assert evaluate(benchmark, local).ndcg10 >= BM25_NDCG10 + 0.10
    served, model = score_via_sidecar(builtin_sidecar.url, benchmark.limited(HTTP_TOPICS, None))
    assert model == "builtin:all-MiniLM-L6-v2"
    assert len(served) == HTTP_TOPICS
    assert max(float(np.max(np.abs(served[qid] - local[qid]))) for qid in served) < 1e-5
