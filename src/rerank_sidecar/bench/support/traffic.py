"""Load traffic against a live sidecar: the workloads, and clients that send them and time each request."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .data import TrafficTexts
from .output import console
from .results import EmbedLoadResult, LoadResult


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


def passage_run(passages: Sequence[str], request: int, n: int) -> list[str]:
    """The `n` passages request number `request` sends: runs that start 7 passages apart, wrapping around."""
    start = request * 7 % max(1, len(passages) - n)
    return list(passages[start : start + n])


class _Traffic:
    """Sends one workload's requests and keeps their latencies."""

    def __init__(self, texts: TrafficTexts, model: str | None = None) -> None:
        self.model = model
        self.passages = texts.passages
        self.queries = itertools.cycle(texts.queries)
        self.offset = itertools.count()

    def _documents(self, n: int) -> list[str]:
        return passage_run(self.passages, next(self.offset), n)

    async def send(self, client: httpx.AsyncClient, n: int) -> tuple[int, float]:
        payload = {"query": next(self.queries), "documents": self._documents(n)}
        if self.model is not None:
            payload["model"] = self.model
        started = time.perf_counter()
        response = await client.post("/rerank", json=payload)
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        elif response.status_code != 200:
            response.raise_for_status()
        return response.status_code, time.perf_counter() - started


async def run_workload(url: str, workload: Workload, texts: TrafficTexts, max_seconds: float, progress: Progress,
                       configuration: str, model: str | None = None) -> LoadResult:
    """Sends `workload` to the sidecar at `url` (naming `model` when given) and sums up its latencies."""
    async with connection(url, max_seconds)() as big_connection:
        traffic = _Traffic(texts, model)
        big_done = 0
        deadline = time.monotonic() + max_seconds
        task = progress.add_task(f"{configuration} {workload.name}", total=workload.requests)
        small_finished = asyncio.Event()

        async def big_client() -> None:
            nonlocal big_done
            while not small_finished.is_set() and time.monotonic() < deadline:
                status, _ = await traffic.send(big_connection, workload.big_documents)
                big_done += status == 200

        big = asyncio.ensure_future(big_client()) if workload.big_documents else None
        loop = await closed_loop(workload.concurrency, workload.requests, deadline, connection(url, max_seconds),
                                 lambda client: traffic.send(client, workload.documents), lambda: progress.advance(task))
        small_finished.set()
        loop_ended = time.perf_counter()
        if big is not None:
            await big  # its pairs count, so the time to finish its request in flight does too
        seconds = loop.seconds + time.perf_counter() - loop_ended
        progress.remove_task(task)
    pairs = len(loop.latencies) * workload.documents + big_done * workload.big_documents
    p50, p95, p99 = loop.percentiles_ms()
    return LoadResult(
        configuration=configuration, workload=workload.name, concurrency=workload.concurrency,
        documents=workload.documents, requests=len(loop.latencies), rejected=loop.failed, pairs=pairs,
        seconds=round(seconds, 3), pairs_per_s=round(pairs / seconds, 2),
        requests_per_s=round(len(loop.latencies) / seconds, 2), p50_ms=p50, p95_ms=p95, p99_ms=p99,
        big_requests=big_done,
    )


@dataclass
class ClosedLoop:
    """What the clients of one closed loop got back."""

    latencies: list[float] = field(default_factory=list)
    """Seconds of each request answered 200."""
    failed: int = 0
    """Requests answered anything else."""
    seconds: float = 0.0
    """From the moment every client had its connection open to the last answer."""

    def percentiles_ms(self) -> tuple[float, float, float]:
        """p50, p95 and p99 of the latencies in ms (NaN when none)."""
        ms = np.array(self.latencies or [float("nan")]) * 1000
        return tuple(round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99))  # type: ignore[return-value]


def connection(url: str, max_seconds: float) -> Callable[[], httpx.AsyncClient]:
    """Makes one client's own connection to `url`, as a separate process would hold."""
    return lambda: httpx.AsyncClient(base_url=url, timeout=max_seconds + 60)


async def closed_loop(concurrency: int, requests: int | None, deadline: float,
                      connect: Callable[[], httpx.AsyncClient],
                      send: Callable[[httpx.AsyncClient], Awaitable[tuple[int, float]]],
                      on_answer: Callable[[], object] = lambda: None, stop: asyncio.Event | None = None) -> ClosedLoop:
    """`concurrency` clients each sending its next request as soon as its last is answered, `requests` in all
    (None: no count) until the `deadline` (time.monotonic) or `stop` is set; `send` returns a request's status
    and seconds.

    Each client has its own connection (`connect`), as separate processes do, opened (GET /health, untimed)
    before the clock starts: 32 connections opened at once otherwise made the first requests E2's p99
    (234 ms against 97 ms once open, embedded default). One httpx pool shared by 32
    clients was the bottleneck itself: 32 clients sending one query each to the embedded default got
    183 answers/s with p99 923 ms (5.3x the mean) from one pool, and 375/s with p99 149 ms from 32
    (2-core EPYC, issue #21); Infinity measured 133/s and 118/s.
    """
    loop = ClosedLoop()
    sent = itertools.count()
    opened = asyncio.Barrier(concurrency + 1)  # the clients, and the clock
    timed = collector_paused() if requests is not None else contextlib.nullcontext()

    def going() -> bool:
        return time.monotonic() < deadline and not (stop is not None and stop.is_set())

    async def client() -> None:
        async with connect() as connection:
            (await connection.get("/health")).raise_for_status()
            await opened.wait()
            while (requests is None or next(sent) < requests) and going():
                await answer(connection)

    async def answer(connection: httpx.AsyncClient) -> None:
        status, latency = await send(connection)
        if status == 200:
            loop.latencies.append(latency)
        else:
            loop.failed += 1
        on_answer()

    clients = asyncio.gather(*(client() for _ in range(concurrency)))
    with timed:
        await opened.wait()
        started = time.perf_counter()
        await clients
        loop.seconds = time.perf_counter() - started
    return loop


class _CollectorPause:
    """How many timed loops run now; Python's cyclic garbage collector is off while any does."""

    running = 0
    """Timed loops inside `collector_paused` now."""


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Turns the garbage collector of this process (the load generator) off while the block runs, and collects
    once the last such block ends.

    With it on, 32 clients embedding one query each made 213 young and 20 middle collections and two full ones
    in 4,000 requests; a full one (every object of the client's process) took 15-36 ms, during which no
    client read its answer, and those pauses were E2's slowest requests (2-core EPYC, issue #21). A run
    leaves about 45 cyclic objects a request (178,709 in 4,000), so only counted runs pause it; an open-ended
    one (the soak's embedding clients) collects as usual between them.
    """
    if _CollectorPause.running == 0:
        gc.collect()
        gc.freeze()
        gc.disable()
    _CollectorPause.running += 1
    try:
        yield
    finally:
        _CollectorPause.running -= 1
        if _CollectorPause.running == 0:
            gc.enable()
            gc.unfreeze()
            gc.collect()


async def warm_up(url: str, workloads: Sequence[Workload], texts: TrafficTexts, max_clients: int = 0,
                  model: str | None = None) -> None:
    """One untimed burst of each workload's requests (all its clients at once, big requests left out).

    A fresh server pays once for its first batches of each shape (memory to allocate, and on a GPU
    kernels to load), and that would count against whichever configuration runs first: on an
    H200, W1's p99 was 2.5 s on a fresh sidecar and 0.4 s on the same sidecar a run later.
    """
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        traffic = _Traffic(texts, model)
        for workload in workloads:
            clients = min(workload.concurrency, max_clients) if max_clients else workload.concurrency
            await asyncio.gather(*(traffic.send(client, workload.documents) for _ in range(clients)))


@dataclass(frozen=True, slots=True)
class EmbedWorkload:
    """One embedding traffic shape."""

    name: str
    """E1 (passages in batches) or E2 (one query a request)."""
    texts: int
    """Texts per request."""
    concurrency: int
    """Clients sending requests back to back."""
    requests: int | None
    """Requests to send in all; None: until stopped (beside another workload, or the soak)."""
    queries: bool
    """The texts are the benchmark's queries (else runs of its passages)."""


def embed_workloads(e1_requests: int, e2_requests: int) -> tuple[EmbedWorkload, EmbedWorkload]:
    """E1: 4 clients sending 64 passages a request; E2: 32 clients sending one query a request."""
    return (EmbedWorkload("E1", texts=64, concurrency=4, requests=e1_requests, queries=False),
            EmbedWorkload("E2", texts=1, concurrency=32, requests=e2_requests, queries=True))


@dataclass(frozen=True, slots=True)
class EmbedTarget:
    """A server's OpenAI-shaped embeddings route."""

    system: str
    """What serves it, as results name it."""
    url: str
    """Base URL."""
    route: str
    """/v1/embeddings (the sidecar) or /embeddings (Infinity)."""
    model: str | None = None
    """The model name requests give; None: the server's default."""


async def run_embed_workload(target: EmbedTarget, workload: EmbedWorkload, texts: TrafficTexts, max_seconds: float,
                             progress: Progress, stop: asyncio.Event | None = None, label: str = "") -> EmbedLoadResult:
    """Sends `workload` to `target` (OpenAI's request: input, model, encoding_format float) and sums up its
    latencies; a request counts as answered when it is a 200 holding one vector per text."""
    source = texts.queries if workload.queries else texts.passages
    numbers = itertools.count()
    name = label or workload.name

    async def send(client: httpx.AsyncClient) -> tuple[int, float]:
        number = next(numbers)
        batch = [source[number % len(source)]] if workload.texts == 1 else passage_run(source, number, workload.texts)
        payload: dict[str, object] = {"input": batch, "encoding_format": "float"}
        if target.model is not None:
            payload["model"] = target.model
        started = time.perf_counter()
        response = await client.post(target.route, json=payload)
        latency = time.perf_counter() - started
        if response.status_code == 503:
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
        if response.status_code == 200 and len(response.json()["data"]) != len(batch):
            return 0, latency  # a 200 without every vector is no answer
        return response.status_code, latency

    task = progress.add_task(f"{target.system} {name}", total=workload.requests)
    loop = await closed_loop(workload.concurrency, workload.requests, time.monotonic() + max_seconds,
                             connection(target.url, max_seconds), send,
                             lambda: progress.advance(task), stop)
    seconds = loop.seconds
    progress.remove_task(task)
    embedded = len(loop.latencies) * workload.texts
    p50, p95, p99 = loop.percentiles_ms()
    return EmbedLoadResult(
        system=target.system, workload=name, concurrency=workload.concurrency, texts_per_request=workload.texts,
        requests=len(loop.latencies), failed=loop.failed, texts=embedded, seconds=round(seconds, 3),
        texts_per_s=round(embedded / seconds, 2), p50_ms=p50, p95_ms=p95, p99_ms=p99,
    )
