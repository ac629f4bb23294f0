"""Load and shutdown on a live sidecar: overload is shed with 503 + Retry-After, nothing is dropped,
hung or logged twice, memory stays flat, and SIGTERM lets every accepted request finish."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import LiveServer, sidecar_env, start_server

QUERY = "What fruit is red and crunchy?"
DOCUMENTS = ["An apple is a red, crunchy fruit.", "Quantum chromodynamics describes the strong interaction."]
CONCURRENCY = 64
QUEUE_LIMIT = 64
LOG_MAX_BYTES = 65536


def rerank_body(index: int) -> dict:
    """One or two short documents, and a query that differs per request."""
    return {"query": f"{QUERY} #{index}", "documents": DOCUMENTS[: 1 + index % 2]}


async def fire(url: str, bodies: dict[str, dict], concurrency: int) -> dict[str, httpx.Response | Exception]:
    """POSTs every body to /rerank, `concurrency` at a time, each under its own id; the answer or error per id."""
    # Idle connections are dropped well before uvicorn's 5 s keep-alive timeout, so a request is never
    # sent on a connection the server is closing at that instant (a client-side race, not a lost request).
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=1.0)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0) as client:

        async def one(request_id: str, body: dict) -> tuple[str, httpx.Response | Exception]:
            async with gate:
                try:
                    return request_id, await client.post("/rerank", json=body, headers={"X-Request-ID": request_id})
                except httpx.HTTPError as exc:  # a timeout or a dropped connection: the test reports it
                    return request_id, exc

        return dict(await asyncio.gather(*(one(request_id, body) for request_id, body in bodies.items())))


def all_log_entries(log_path: Path) -> list[dict]:
    """Every line of the log and its rotated files; each must be one whole JSON object."""
    files = sorted(log_path.parent.glob(f"{log_path.name}*"))
    return [json.loads(line) for file in files for line in file.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def loaded_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("load")
    env = sidecar_env(
        workdir,
        max_queued_pairs=str(QUEUE_LIMIT),
        max_batch_pairs="16",
        threads="1",  # on a 2-core machine the load generator needs the other core
        log_max_bytes=str(LOG_MAX_BYTES),
        log_backups="200",
        log_text="true",  # longer lines, more rotations, and the text path under load
    )
    server = start_server(workdir, env)
    yield server
    server.stop()


@pytest.mark.timeout(300)
def test_overload_is_shed_with_503_and_every_request_answered_and_logged_once(loaded_sidecar: LiveServer) -> None:
    with loaded_sidecar.client() as client:
        assert client.post("/warmup").status_code == 200
    server = psutil.Process(loaded_sidecar.process.pid)

    warmup = {f"warm-{index}": rerank_body(index) for index in range(2 * CONCURRENCY)}
    main = {f"load-{index}": rerank_body(index) for index in range(2000)}
    answers = asyncio.run(fire(loaded_sidecar.url, warmup, CONCURRENCY))
    rss_after_warmup = server.memory_info().rss
    answers |= asyncio.run(fire(loaded_sidecar.url, main, CONCURRENCY))
    rss_at_end = server.memory_info().rss

    failures = {request_id: answer for request_id, answer in answers.items() if isinstance(answer, Exception)}
    assert not failures, f"{len(failures)} requests got no answer, e.g. {next(iter(failures.items()))}"
    statuses = Counter(answer.status_code for answer in answers.values())
    assert set(statuses) == {200, 503}, statuses
    for request_id, answer in answers.items():
        assert answer.headers["x-request-id"] == request_id
        if answer.status_code == 200:
            body = {**warmup, **main}[request_id]
            scores = answer.json()["scores"]
            assert len(scores) == len(body["documents"]) and all(0.0 <= score <= 1.0 for score in scores)
        else:
            assert answer.json()["error"]["type"] == "queue_full"
            assert int(answer.headers["retry-after"]) >= 1

    entries = all_log_entries(loaded_sidecar.log_path)
    logged = Counter(entry["request_id"] for entry in entries)
    assert all(logged[request_id] == 1 for request_id in answers), "a request was logged twice or not at all"
    assert {entry["request_id"]: entry["status"] for entry in entries if entry["request_id"] in answers} == {
        request_id: answer.status_code for request_id, answer in answers.items()
    }
    rotated = list(loaded_sidecar.log_path.parent.glob(f"{loaded_sidecar.log_path.name}.*"))
    assert len(rotated) >= 2, "the log never rotated"
    assert rss_at_end <= 1.2 * rss_after_warmup, (rss_after_warmup, rss_at_end)


def scrape(client: httpx.Client) -> dict[str, float]:
    text = client.get("/metrics").text
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


async def refused_after(url: str, timeout: float) -> bool:
    """Whether new connections are refused within `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=5) as late:
        while asyncio.get_running_loop().time() < deadline:
            try:
                await late.get("/health", headers={"Connection": "close"})
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                return True  # refused, or accepted from the backlog as the listener closed and then reset
            await asyncio.sleep(0.02)
    return False


@pytest.mark.timeout(180)
def test_sigterm_finishes_every_accepted_request_then_exits_0(tmp_path: Path) -> None:
    # One pair per forward pass, so the accepted work outlasts the signal.
    server = start_server(tmp_path, sidecar_env(tmp_path, max_batch_pairs="1"))
    requests, per_request = 16, 4
    passage = " ".join(["Apples are crunchy and red, pears are soft and green."] * 3)
    bodies = {f"term-{i}": {"query": QUERY, "documents": [f"{passage} {i}.{j}" for j in range(per_request)]}
              for i in range(requests)}
    try:
        with server.client() as client:
            assert client.post("/warmup").status_code == 200
            scored_before = scrape(client)["rerank_pairs_scored_total"]

            async def scenario() -> tuple[dict, float, bool]:
                work = asyncio.create_task(fire(server.url, bodies, requests))
                while True:  # accepted: every pair scored or queued, but for the one in the model
                    now = await asyncio.to_thread(scrape, client)
                    queued = now["rerank_queue_depth_pairs"]
                    if now["rerank_pairs_scored_total"] - scored_before + queued >= requests * per_request - 1:
                        break
                    await asyncio.sleep(0.02)
                os.kill(server.process.pid, signal.SIGTERM)
                refused = await refused_after(server.url, timeout=10)
                return await work, queued, refused

            answers, queued_at_signal, refused = asyncio.run(scenario())
        assert queued_at_signal > 0, "the work drained before the signal; make the requests bigger"
        assert refused, "new connections were still accepted 10 s after SIGTERM"
        failed = {key: answer for key, answer in answers.items() if getattr(answer, "status_code", None) != 200}
        assert not failed, failed
        assert all(len(answer.json()["scores"]) == per_request for answer in answers.values())
        assert server.process.wait(60) == 0, server.output_path.read_text()[-3000:]
        logged = {entry["request_id"]: entry["status"] for entry in all_log_entries(server.log_path)}
        assert all(logged.get(request_id) == 200 for request_id in bodies), logged
    finally:
        server.stop()
