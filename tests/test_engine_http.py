"""Scheduling seen from outside: 503 + Retry-After when the queue is full, /health stays quick, metrics show sharing."""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import re
import time
from collections.abc import Iterator


def sample(metrics_text: str, name: str) -> float:
    """The value of one sample line of Prometheus text."""
    return float(re.search(rf"^{re.escape(name)} (\S+)$", metrics_text, re.MULTILINE).group(1))


SHORT_DOCS = [f"document number {i} about topic {i % 7}" for i in range(1000)]
# About 120 tokens each: slow enough that a queue of them takes seconds to drain on any CPU.
LONG_DOCS = [f"passage {i} " + "a river carries sediment from the mountains to the delta plains " * 10 for i in range(1000)]
# About 60 tokens each: 1,000 of them keep the model busy for several seconds.
MEDIUM_DOCS = [f"passage {i} " + "a river carries sediment from the mountains to the delta plains " * 5 for i in range(1000)]


def test_queue_full_is_503_with_retry_after(sidecar_factory) -> None:
    server = sidecar_factory(max_queued_pairs="50", max_batch_pairs="1")
    with server.client() as client:
        client.post("/warmup").raise_for_status()
        with concurrent.futures.ThreadPoolExecutor(1) as pool, server.client() as own:
            # 45 pairs scored one per forward pass: they stay queued for 44 passes.
            first = pool.submit(own.post, "/rerank", json={"query": "topic 3", "documents": LONG_DOCS[:45]})
            while client.get("/health").json()["queue_depth"] == 0:
                assert not first.done(), "the first request was answered before it was seen queued"
            # 50 more pairs fit the bound alone but not beside any queued pair.
            refused = client.post("/rerank", json={"query": "topic 4", "documents": LONG_DOCS[45:95]})
            assert first.result().status_code == 200
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "queue_full" and "RERANK_MAX_QUEUED_PAIRS" in error["message"]

        too_big = client.post("/rerank", json={"query": "q", "documents": SHORT_DOCS[:51]})
        assert too_big.status_code == 413 and "50" in too_big.json()["error"]["message"]


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pauses this process's garbage collector: the timings are the server's, not this process's.

    With every test module imported, one collection here took 221 ms and was counted as /health's.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_health_answers_quickly_while_a_1000_document_request_is_scored(sidecar_factory) -> None:
    server = sidecar_factory()
    with server.client() as client:
        client.post("/warmup").raise_for_status()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            big = pool.submit(client.post, "/rerank", json={"query": "topic 3", "documents": MEDIUM_DOCS})
            with server.client() as prober, collector_paused():
                latencies, busy = [], 0
                while not big.done():
                    started = time.perf_counter()
                    health = prober.get("/health").json()
                    latencies.append(time.perf_counter() - started)
                    busy += health["queue_depth"] > 0
                    time.sleep(0.05)
            assert big.result().status_code == 200
    assert busy >= 3, "the big request finished before /health could be probed during it"
    slowest = max(range(len(latencies)), key=latencies.__getitem__)
    assert latencies[slowest] < 0.1, (
        f"/health probe {slowest + 1} of {len(latencies)} took {latencies[slowest] * 1000:.0f} ms; "
        f"all in ms: {[round(latency * 1000) for latency in latencies]}"
    )


def test_metrics_show_concurrent_requests_sharing_batches(sidecar_factory) -> None:
    server = sidecar_factory(max_batch_pairs="32")
    with server.client() as client:
        client.post("/warmup").raise_for_status()

        def rerank(i: int) -> int:
            with server.client() as own:
                docs = SHORT_DOCS[i * 20 : i * 20 + 20]
                return own.post("/rerank", json={"query": f"topic {i}", "documents": docs}).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(rerank, range(16))) == [200] * 16
        metrics = client.get("/metrics").text
    # Histogram of distinct requests per forward pass: some batch held pairs of two or more requests.
    model = 'model="builtin:all-MiniLM-L6-v2"'
    single = sample(metrics, f'rerank_batch_requests_bucket{{le="1.0",{model}}}')
    total = sample(metrics, f"rerank_batch_requests_count{{{model}}}")
    assert total > single, metrics
    scored = sample(metrics, f"rerank_pairs_scored_total{{{model}}}")
    assert scored == 16 * 20 + 1  # every pair once, plus the warm-up pair
