"""Ranking evaluation, used by `calibrate`, the benchmarks and the tests (not a benchmark itself).

trec.py: TREC-style data (BM25 candidates + qrels) and its metrics; inprocess.py: scoring it in this
process, batched as the engine batches.
"""
