"""`rerank-sidecar calibrate`: fits the embedded bi-encoder's cosine -> P(relevant) logistic map on TREC DL judgements.

Not a benchmark: its output is the `BUILTIN_CALIBRATION` constant of models/bi_encoder.py. It reads the
benchmark data with evaluation/trec.py and scores it with evaluation/inprocess.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from .evaluation.inprocess import score_in_process
from .evaluation.trec import RELEVANT_GRADE, load_benchmark


def fit_calibration(cosines: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
    """(scale, bias) of sigmoid(scale * cosine + bias) fitted by unregularized logistic regression."""
    model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=1000)
    model.fit(cosines.reshape(-1, 1), relevant.astype(int))
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def main(args: argparse.Namespace) -> int:
    benchmark = load_benchmark(Path(args.data))
    raw = score_in_process(benchmark, model_name="", model_family="auto", backend="torch")
    cosines, labels = [], []
    for topic in benchmark.topics:
        grades = benchmark.qrels[topic.qid]
        for candidate, cosine in zip(topic.candidates, raw[topic.qid], strict=True):
            if candidate.docid in grades:  # unjudged passages carry no label
                cosines.append(cosine)
                labels.append(grades[candidate.docid] >= RELEVANT_GRADE)
    scale, bias = fit_calibration(np.array(cosines), np.array(labels))
    print(f"fitted on {len(labels)} judged pairs ({int(np.sum(labels))} relevant)")
    print(f"BUILTIN_CALIBRATION = Calibration(scale={scale:.4f}, bias={bias:.4f})")
    return 0
