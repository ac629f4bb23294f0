"""Benchmarks: ranking quality, load, backends and memory."""
