"""Benchmarks: one module per `rerank-sidecar bench` sub-command, named like it; what they share is in support/."""
