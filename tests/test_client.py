"""The Python clients: retries and Retry-After (mock transport), positional fallback, every route live."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import LiveServer, free_port, sidecar_env, start_server
from tenacity import AsyncRetrying, Retrying

from rerank_sidecar.api.compat_schemas import CompatRerankRequest
from rerank_sidecar.client import core as client_core
from rerank_sidecar.client import (
    POSITIONAL_MODEL_ID,
    AsyncSidecarClient,
    RetryPolicy,
    SidecarClient,
    SidecarHTTPError,
    SidecarUnreachable,
    retry_after_s,
)
from rerank_sidecar.config import BUILTIN_MODEL_ID
from rerank_sidecar.launcher import ExitCode

APPLE = "An apple is a red, crunchy fruit."
QCD = "Quantum chromodynamics describes the strong interaction."
BANANA = "Bananas are long and yellow."
QUERY = "What fruit is red and crunchy?"
HEALTH = {
    "status": "ready", "model_loaded": True, "model": BUILTIN_MODEL_ID, "revision": "r", "configured_revision": "main",
    "scheduler": "batched", "uptime_s": 1.0, "queue_depth": 0, "pid": 4242, "version": "0.1.0",
    "models": [{"name": BUILTIN_MODEL_ID, "aliases": [], "status": "ready", "loaded": True, "model": BUILTIN_MODEL_ID,
                "revision": "r", "configured_revision": "main", "idle_s": 0.0, "queue_depth": 0}],
}
# A policy with short backoffs, whose bounds the connection-error test checks; Retry-After waits are the server's.
QUICK = RetryPolicy(attempts=3, initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The embedded model on the float32 torch backend, whose scores do not depend on what shares a batch.

    (Comparing routes to 1e-6 needs fp32: the CPU default, int8 ONNX, is held batch-independent to 1e-4.)
    """
    workdir = tmp_path_factory.mktemp("client-sidecar")
    server = start_server(workdir, sidecar_env(workdir, backend="torch"))
    yield server
    server.stop()


def _overloaded(retry_after: str) -> httpx.Response:
    body = {"error": {"type": "queue_full", "message": "the scoring queue is full"}}
    return httpx.Response(503, headers={"Retry-After": retry_after}, json=body)


class Scripted:
    """A mock server that plays its answers in order and counts the requests it was sent."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds the clients wait before each retry, recorded through tenacity's `sleep` hook instead of slept:
    the test checks the wait asked for, and no wall clock of a busy machine decides whether it passes."""
    recorded: list[float] = []

    async def async_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr(client_core, "Retrying", functools.partial(Retrying, sleep=recorded.append))
    monkeypatch.setattr(client_core, "AsyncRetrying", functools.partial(AsyncRetrying, sleep=async_sleep))
    return recorded


def test_503_retries_wait_for_retry_after(waits: list[float]) -> None:
    server = Scripted(_overloaded("1"), _overloaded("2"), httpx.Response(200, json=HEALTH))
    with SidecarClient("http://sidecar", api_key="", transport=httpx.MockTransport(server)) as client:
        health = client.health()
    assert health.pid == 4242 and health.status == "ready"
    assert server.requests == 3
    assert waits == [1.0, 2.0]  # each wait is the Retry-After of the answer before it


def test_async_503_retries_wait_for_retry_after(waits: list[float]) -> None:
    server = Scripted(_overloaded("3"), httpx.Response(200, json=HEALTH))

    async def call() -> None:
        async with AsyncSidecarClient("http://sidecar", api_key="", transport=httpx.MockTransport(server)) as client:
            assert (await client.health()).pid == 4242

    asyncio.run(call())
    assert server.requests == 2 and waits == [3.0]


def test_retry_after_longer_than_the_policy_accepts_fails_at_once(waits: list[float]) -> None:
    server = Scripted(_overloaded("60"), httpx.Response(200, json=HEALTH))
    with SidecarClient("http://sidecar", api_key="", transport=httpx.MockTransport(server)) as client:
        with pytest.raises(SidecarHTTPError) as raised:
            client.health()
    assert server.requests == 1 and waits == []
    assert raised.value.status == 503 and raised.value.type == "queue_full" and raised.value.retry_after_s == 60.0


def test_client_errors_are_not_retried() -> None:
    invalid = httpx.Response(422, json={"error": {"type": "validation_error", "message": "documents: too many"}})
    server = Scripted(invalid, httpx.Response(200, json=HEALTH))
    with SidecarClient("http://sidecar", api_key="", transport=httpx.MockTransport(server)) as client:
        with pytest.raises(SidecarHTTPError) as raised:
            client.rerank(QUERY, [APPLE])
    assert server.requests == 1
    error = raised.value
    assert (error.status, error.type, error.message) == (422, "validation_error", "documents: too many")


def test_connection_errors_are_retried_then_reported(waits: list[float]) -> None:
    refused = httpx.ConnectError("connection refused")
    recovering = Scripted(refused, refused, httpx.Response(200, json=HEALTH))
    with SidecarClient("http://sidecar", api_key="", retry=QUICK, transport=httpx.MockTransport(recovering)) as client:
        assert client.health().pid == 4242
    assert recovering.requests == 3
    assert len(waits) == 2 and all(0 < wait <= QUICK.max_backoff_s for wait in waits), waits

    down = Scripted(refused, refused, refused)
    with SidecarClient("http://sidecar", api_key="", retry=QUICK, transport=httpx.MockTransport(down)) as client:
        with pytest.raises(SidecarUnreachable, match="http://sidecar"):
            client.health()
    assert down.requests == QUICK.attempts


def test_retry_after_http_date() -> None:
    in_ten_seconds = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8.0 <= retry_after_s(in_ten_seconds) <= 10.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert retry_after_s("3") == 3.0 and retry_after_s(None) is None and retry_after_s("soon") is None


def test_positional_fallback_with_nothing_listening() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    documents = [QCD, APPLE, BANANA, "fourth"]
    with SidecarClient(url, api_key="", retry=QUICK, fallback="positional") as client:
        reply = client.rerank(QUERY, documents, top_n=2, return_documents=True)
        batch = client.rerank_batch([(QUERY, documents[:2]), ("yellow fruit", documents[2:3])])
        compat = client.compat_rerank(CompatRerankRequest(query=QUERY, documents=[QCD, {"text": APPLE, "id": "a"}],
                                                          return_documents=True))
    assert reply.fallback is True and reply.model == POSITIONAL_MODEL_ID
    assert reply.scores == [1.0, 1 / 2, 1 / 3, 1 / 4]
    assert [(result.index, result.relevance_score, result.document) for result in reply.results] == [
        (0, 1.0, QCD), (1, 0.5, APPLE)
    ]
    assert batch.fallback is True and [group.scores for group in batch.groups] == [[1.0, 0.5], [1.0]]
    assert compat.fallback is True and [result.document for result in compat.results] == [
        {"text": QCD}, {"text": APPLE, "id": "a"}
    ]

    with SidecarClient(url, api_key="", retry=QUICK) as client, pytest.raises(SidecarUnreachable):
        client.rerank(QUERY, documents)
    with SidecarClient(url, api_key="", retry=QUICK, fallback="positional") as client:
        with pytest.raises(SidecarUnreachable):
            client.health()  # only scoring routes have a fallback


def test_async_positional_fallback_with_nothing_listening() -> None:
    async def call() -> list[float]:
        url = f"http://127.0.0.1:{free_port()}"
        async with AsyncSidecarClient(url, api_key="", retry=QUICK, fallback="positional") as client:
            reply = await client.rerank(QUERY, [QCD, APPLE, BANANA])
        assert reply.fallback is True and [result.index for result in reply.results] == [0, 1, 2]
        return reply.scores

    assert asyncio.run(call()) == [1.0, 0.5, 1 / 3]


def test_every_route_live_agrees_with_plain_rerank(sidecar) -> None:
    documents = [QCD, APPLE, BANANA]
    with sidecar.client() as plain:
        reference = plain.post("/rerank", json={"query": QUERY, "documents": documents}).json()
        yellow = plain.post("/rerank", json={"query": "yellow fruit", "documents": documents[1:]}).json()
    with SidecarClient(sidecar.url, api_key="", fallback="positional") as client:
        assert client.health().pid == sidecar.process.pid
        warm = client.warmup()
        reply = client.rerank(QUERY, documents, top_n=2, return_documents=True)
        batch = client.rerank_batch([(QUERY, documents), ("yellow fruit", documents[1:])])
        v1 = client.compat_rerank(CompatRerankRequest(query=QUERY, documents=documents), "v1")
        v2 = client.compat_rerank(CompatRerankRequest(query=QUERY, documents=[{"text": text} for text in documents]))

    assert warm.status == "ready" and warm.model == BUILTIN_MODEL_ID
    assert reply.fallback is False and reply.model == BUILTIN_MODEL_ID
    assert reply.scores == pytest.approx(reference["scores"], abs=1e-5)
    assert [result.index for result in reply.results] == [1, 2]  # apple first: red and crunchy
    assert reply.results[0].document == APPLE
    assert batch.fallback is False
    assert batch.groups[0].scores == pytest.approx(reference["scores"], abs=1e-5)
    assert batch.groups[1].scores == pytest.approx(yellow["scores"], abs=1e-5)
    for compat in (v1, v2):
        assert compat.fallback is False
        assert {result.index: result.relevance_score for result in compat.results} == pytest.approx(
            dict(enumerate(reference["scores"])), abs=1e-5
        )


def test_async_client_live(sidecar) -> None:
    async def call() -> list[float]:
        async with AsyncSidecarClient(sidecar.url, api_key="") as client:
            assert (await client.health()).pid == sidecar.process.pid
            replies = await asyncio.gather(*(client.rerank(QUERY, [QCD, APPLE]) for _ in range(4)))
        assert all(reply.scores == replies[0].scores for reply in replies)
        return replies[0].scores

    with SidecarClient(sidecar.url, api_key="") as client:
        assert asyncio.run(call()) == pytest.approx(client.rerank(QUERY, [QCD, APPLE]).scores, abs=1e-5)


def _cli(*args: str, port: int, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env["RERANK_SIDECAR_PORT"] = str(port)
    return subprocess.run([sys.executable, "-m", "rerank_sidecar.cli", "rerank", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_rerank_command(sidecar) -> None:
    port = int(sidecar.url.rsplit(":", 1)[1])
    with sidecar.client() as plain:
        reference = plain.post("/rerank", json={"query": QUERY, "documents": [QCD, APPLE]}).json()

    from_args = _cli(QUERY, QCD, APPLE, "--top-n", "1", port=port)
    assert from_args.returncode == ExitCode.OK, from_args.stderr
    answer = json.loads(from_args.stdout)
    assert answer["scores"] == pytest.approx(reference["scores"], abs=1e-5)
    assert [result["index"] for result in answer["results"]] == [1] and answer["fallback"] is False

    body = {"query": QUERY, "documents": [QCD, APPLE], "return_documents": True}
    from_stdin = _cli(port=port, stdin=json.dumps(body))
    assert from_stdin.returncode == ExitCode.OK, from_stdin.stderr
    assert json.loads(from_stdin.stdout)["results"][0]["document"] == APPLE

    bad = _cli(port=port, stdin=json.dumps({"query": " ", "documents": [APPLE]}))
    assert bad.returncode == ExitCode.BAD_INPUT and "query" in bad.stderr

    refused = _cli(QUERY, APPLE, "--model", "some-other-model", port=port)
    assert refused.returncode == ExitCode.REQUEST_FAILED and "some-other-model" in refused.stderr

    unreachable = _cli(QUERY, QCD, APPLE, port=free_port())
    assert unreachable.returncode == ExitCode.UNREACHABLE and "no answer" in unreachable.stderr
    fallback = _cli(QUERY, QCD, APPLE, "--fallback", "positional", port=free_port())
    assert fallback.returncode == ExitCode.OK and json.loads(fallback.stdout)["scores"] == [1.0, 0.5]
