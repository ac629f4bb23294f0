"""Load traffic against a live sidecar: the workloads, and clients that send them and time each request."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .data import TrafficTexts
from .output import console
from .results import LoadResult


@dataclass(frozen=True, slots=True)
class Workload:
    """One traffic shape."""

    name: str
    """W1, W2, W3 or sweep-cN."""
    documents: int
    """Documents per (small) request."""
    concurrency: int
    """Clients sending small requests back to back."""
    requests: int
    """Small requests to send in all."""
    big_documents: int = 0
    """W3 only: documents per request of the one client sending big requests meanwhile."""


def standard_workloads(scale: float, w1_documents: int = 100) -> list[Workload]:
    """The three workloads of the engine issue; `scale` shrinks or grows their request counts."""
    count = lambda n: max(1, round(n * scale))  # noqa: E731
    return [
        Workload("W1", documents=w1_documents, concurrency=4, requests=count(24)),
        Workload("W2", documents=5, concurrency=32, requests=count(400)),
        Workload("W3", documents=5, concurrency=8, requests=count(160), big_documents=1000),
    ]


def sweep_workloads(concurrencies: Sequence[int], documents: int, requests_per_client: int,
                    total_requests: int = 0) -> list[Workload]:
    """One point per concurrency c: each of its c clients sends `requests_per_client` requests or, given
    `total_requests`, ceil(total_requests / c), so that every point has at least that many."""
    def per_client(clients: int) -> int:
        return math.ceil(total_requests / clients) if total_requests else max(1, requests_per_client)

    return [Workload(f"c{c}", documents, c, c * per_client(c)) for c in concurrencies]


def traffic_progress() -> Progress:
    """Progress bars for `run_workload`: one per workload and configuration while it runs."""
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=console, transient=True)


class _Traffic:
    """Sends one workload's requests and keeps their latencies."""

    def __init__(self, client: httpx.AsyncClient, texts: TrafficTexts, model: str | None = None) -> None:
        self.client = client
        self.model = model
        self.passages = texts.passages
        self.queries = itertools.cycle(texts.queries)
        self.offset = itertools.count()

    def _documents(self, n: int) -> list[str]:
        start = next(self.offset) * 7 % max(1, len(self.passages) - n)
        return list(self.passages[start : start + n])

    async def send(self, n: int) -> tuple[int, float]:
        payload = {"query": next(self.queries), "documents": self._documents(n)}
        if self.model is not None:
            payload["model"] = self.model
        started = time.perf_counter()
        response = await self.client.post("/rerank", json=payload)
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        elif response.status_code != 200:
            response.raise_for_status()
        return response.status_code, time.perf_counter() - started


async def run_workload(url: str, workload: Workload, texts: TrafficTexts, max_seconds: float, progress: Progress,
                       configuration: str, model: str | None = None) -> LoadResult:
    """Sends `workload` to the sidecar at `url` (naming `model` when given) and sums up its latencies."""
    limits = httpx.Limits(max_connections=workload.concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=max_seconds + 60, limits=limits) as client:
        traffic = _Traffic(client, texts, model)
        latencies: list[float] = []
        rejected = 0
        big_done = 0
        remaining = itertools.count()
        deadline = time.monotonic() + max_seconds
        task = progress.add_task(f"{configuration} {workload.name}", total=workload.requests)
        small_finished = asyncio.Event()

        async def small_client() -> None:
            nonlocal rejected
            while next(remaining) < workload.requests and time.monotonic() < deadline:
                status, latency = await traffic.send(workload.documents)
                if status == 200:
                    latencies.append(latency)
                else:
                    rejected += 1
                progress.advance(task)

        async def big_client() -> None:
            nonlocal big_done
            while not small_finished.is_set() and time.monotonic() < deadline:
                status, _ = await traffic.send(workload.big_documents)
                big_done += status == 200

        started = time.perf_counter()
        big = asyncio.ensure_future(big_client()) if workload.big_documents else None
        await asyncio.gather(*(small_client() for _ in range(workload.concurrency)))
        small_finished.set()
        if big is not None:
            await big
        seconds = time.perf_counter() - started
        progress.remove_task(task)
    pairs = len(latencies) * workload.documents + big_done * workload.big_documents
    ms = np.array(latencies or [float("nan")]) * 1000
    return LoadResult(
        configuration=configuration, workload=workload.name, concurrency=workload.concurrency,
        documents=workload.documents, requests=len(latencies), rejected=rejected, pairs=pairs,
        seconds=round(seconds, 3), pairs_per_s=round(pairs / seconds, 2),
        requests_per_s=round(len(latencies) / seconds, 2),
        p50_ms=round(float(np.percentile(ms, 50)), 1), p95_ms=round(float(np.percentile(ms, 95)), 1),
        p99_ms=round(float(np.percentile(ms, 99)), 1), big_requests=big_done,
    )


async def warm_up(url: str, workloads: Sequence[Workload], texts: TrafficTexts, max_clients: int = 0,
                  model: str | None = None) -> None:
    """One untimed burst of each workload's requests (all its clients at once, big requests left out).

    A fresh server pays once for its first batches of each shape (memory to allocate, and on a GPU
    kernels to load), and that would count against whichever configuration runs first: on an
    H200, W1's p99 was 2.5 s on a fresh sidecar and 0.4 s on the same sidecar a run later.
    """
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        traffic = _Traffic(client, texts, model)
        for workload in workloads:
            clients = min(workload.concurrency, max_clients) if max_clients else workload.concurrency
            await asyncio.gather(*(traffic.send(workload.documents) for _ in range(clients)))
