"""Operations and safety: auth, exposure refusal, limits, one error shape, request ids, metrics,
client disconnects and the request log's rotation.

In-process tests drive the real ASGI stack through Starlette's TestClient; the metrics and
disconnect tests run against a live uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import BaseRoute

from conftest import LiveServer, free_port, sidecar_env, start_server
from rerank_sidecar.api.app import create_app
from rerank_sidecar.api.auth import UnsafeExposure, exposure_refusal
from rerank_sidecar.api.dialect import ROUTE_DIALECTS
from rerank_sidecar.config import BUILTIN_MODEL_ID, Settings
from rerank_sidecar.requestlog import RequestLog, RequestLogEntry

APPLE = "An apple is a red, crunchy fruit."
QCD = "Quantum chromodynamics describes the strong interaction."
QUERY = "What fruit is red and crunchy?"
KEY = "s3cret-key"


# ---------------------------------------------------------------- helpers


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings from the given values only: no RERANK_* from the caller's environment, no .env file."""
    return Settings(_env_file=None, log_path=tmp_path / "requests.jsonl", cache_dir=tmp_path / "cache", **overrides)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [key for key in os.environ if key.startswith("RERANK_")]:
        monkeypatch.delenv(key)


def log_entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_error_shape(response: httpx.Response, status: int, error_type: str) -> str:
    """Checks the one error shape and returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == error_type, body
    assert "x-request-id" in response.headers
    return body["error"]["message"]


def scrape(client: httpx.Client) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics, keyed by (sample name, labels)."""
    text = client.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# The label of every per-model series: the one model's served id.
OF_MODEL = {"model": BUILTIN_MODEL_ID}


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def served_routes(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """(method, path) of every route, those of included routers too."""
    served = []
    for route in routes:
        if (included := getattr(route, "original_router", None)) is not None:
            served.extend(served_routes(included.routes))
        else:
            served.extend((method, route.path) for method in sorted(route.methods - {"HEAD"}))
    return served


# ---------------------------------------------------------------- auth and exposure (in-process)


@pytest.fixture
def keyed_app(tmp_path: Path, clean_env: None) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tmp_path, api_key=KEY)), raise_server_exceptions=False) as client:
        yield client


def test_api_key_is_required_on_every_route_but_health(keyed_app: TestClient, tmp_path: Path) -> None:
    routes = [(method, path) for method, path in served_routes(keyed_app.app.routes) if path != "/health"]
    assert {("GET", "/metrics"), ("POST", "/rerank"), ("POST", "/warmup"), ("GET", "/openapi.json")} <= set(routes)
    for method, path in routes:
        response = keyed_app.request(method, path, headers={"X-Request-ID": f"nokey {method} {path}"})
        assert response.status_code == 401, (method, path)
        if (method, path) not in ROUTE_DIALECTS:  # those answer in their own shape, as test_dialects.py checks
            assert_error_shape(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == 'Bearer realm="rerank-sidecar"'
    for header in (f"Bearer {KEY}x", f"Basic {KEY}", "Bearer", KEY):
        response = keyed_app.get("/metrics", headers={"Authorization": header})
        assert_error_shape(response, 401, "unauthorized")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert KEY not in response.text  # the refusal never echoes a key

    assert keyed_app.get("/health").status_code == 200
    assert keyed_app.get("/metrics", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed_app.get("/metrics", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
    # Past the key, the request reaches its route (which refuses the blank query without loading the model).
    past = keyed_app.post("/rerank", json={"query": " ", "documents": []}, headers={"Authorization": f"Bearer {KEY}"})
    assert_error_shape(past, 422, "validation_error")

    logged = {entry["request_id"]: entry["status"] for entry in log_entries(tmp_path / "requests.jsonl")}
    assert all(logged[f"nokey {method} {path}"] == 401 for method, path in routes)


def test_no_key_configured_means_open_on_loopback(tmp_path: Path, clean_env: None) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as client:
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200


@pytest.mark.parametrize(
    ("host", "settings", "refused"),
    [
        ("127.0.0.1", {}, False),
        ("127.0.0.2", {}, False),
        ("localhost", {}, False),
        ("::1", {}, False),
        ("[::1]", {}, False),
        ("0.0.0.0", {}, True),
        ("::", {}, True),
        ("192.168.1.20", {}, True),
        ("sidecar.example.org", {}, True),
        ("0.0.0.0", {"api_key": KEY}, False),
        ("0.0.0.0", {"allow_unauthenticated": True}, False),
    ],
)
def test_exposure_decision(tmp_path: Path, clean_env: None, host: str, settings: dict, refused: bool) -> None:
    refusal = exposure_refusal(make_settings(tmp_path, sidecar_host=host, **settings))
    assert (refusal is not None) == refused
    if refused:
        assert "RERANK_API_KEY" in refusal and "RERANK_ALLOW_UNAUTHENTICATED=true" in refusal and host in refusal


def test_create_app_refuses_an_exposed_app_without_key_and_builds_it_when_allowed(
    tmp_path: Path, clean_env: None
) -> None:
    with pytest.raises(UnsafeExposure, match="RERANK_API_KEY"):
        create_app(make_settings(tmp_path, sidecar_host="0.0.0.0"))
    # Built and driven in-process, never served: no listener is opened on a public address. Allowed, it answers
    # every route without a key.
    allowed = create_app(make_settings(tmp_path, sidecar_host="0.0.0.0", allow_unauthenticated=True))
    with TestClient(allowed, raise_server_exceptions=False) as client:
        assert client.get("/metrics").status_code == 200
        refused_query = client.post("/rerank", json={"query": " ", "documents": []})
    assert_error_shape(refused_query, 422, "validation_error")  # past auth: the route itself refused the body


def test_serve_refuses_a_non_loopback_bind_without_key(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "rerank_sidecar.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env=sidecar_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "refusing to listen on '0.0.0.0' without an API key" in result.stderr
    assert "RERANK_ALLOW_UNAUTHENTICATED=true" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    assert time.monotonic() - started < 60


# ---------------------------------------------------------------- limits and error shapes (in-process)


@pytest.fixture
def limited_app(tmp_path: Path, clean_env: None) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, max_body_bytes=4000, max_documents=3, max_document_chars=50, max_query_chars=20)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize("route", ["/rerank", "/v1/rerank", "/v2/rerank"])
def test_each_limit_answers_with_its_status_and_names_it(limited_app: TestClient, route: str) -> None:
    too_big = limited_app.post(route, content=b'{"query": "q", "documents": ["' + b"x" * 5000 + b'"]}',
                               headers={"Content-Type": "application/json"})
    assert "4000 bytes" in assert_error_shape(too_big, 413, "payload_too_large")

    many = limited_app.post(route, json={"query": "q", "documents": ["a", "b", "c", "d"]})
    message = assert_error_shape(many, 422, "validation_error")
    assert message.startswith("documents:") and "limit of 3" in message and "RERANK_MAX_DOCUMENTS" in message

    long_doc = limited_app.post(route, json={"query": "q", "documents": ["short", "y" * 51]})
    message = assert_error_shape(long_doc, 422, "validation_error")
    assert message.startswith("documents.1:") and "limit of 50" in message and "RERANK_MAX_DOCUMENT_CHARS" in message

    long_query = limited_app.post(route, json={"query": "z" * 21, "documents": ["a"]})
    message = assert_error_shape(long_query, 422, "validation_error")
    assert message.startswith("query:") and "limit of 20" in message and "RERANK_MAX_QUERY_CHARS" in message

    # JSON may carry a lone surrogate ("\ud800"), which no tokenizer can take: a 422, not a 500.
    surrogate = limited_app.post(route, content=b'{"query": "q", "documents": ["ok", "bad \\ud800"]}',
                                 headers={"Content-Type": "application/json"})
    assert assert_error_shape(surrogate, 422, "validation_error").startswith("documents.1:")


def test_batch_limits_name_the_group(limited_app: TestClient) -> None:
    body = {"groups": [{"query": "q", "documents": ["a"]}, {"query": "q", "documents": ["a", "b", "c", "d"]}]}
    message = assert_error_shape(limited_app.post("/rerank/batch", json=body), 422, "validation_error")
    assert message.startswith("groups.1.documents:") and "limit of 3" in message


def test_framework_errors_use_the_one_shape(limited_app: TestClient) -> None:
    assert "Not Found" in assert_error_shape(limited_app.get("/no/such/route"), 404, "not_found")
    wrong_method = limited_app.get("/rerank")
    assert_error_shape(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"
    as_json = {"Content-Type": "application/json"}
    malformed = limited_app.post("/rerank", content=b'{"query": "q", "documents": [', headers=as_json)
    assert "invalid JSON" in assert_error_shape(malformed, 422, "validation_error")
    wrong_type = limited_app.post("/rerank", json={"query": "q", "documents": "not a list"})
    assert "documents" in assert_error_shape(wrong_type, 422, "validation_error")
    as_form = {"Content-Type": "application/x-www-form-urlencoded"}
    not_json = limited_app.post("/rerank", content=b"query=q", headers=as_form)
    assert "Content-Type: application/json" in assert_error_shape(not_json, 422, "validation_error")


def test_an_unexpected_exception_is_a_json_500_with_request_id_log_line_and_traceback(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings(tmp_path))

    async def broken_rerank(*args: object, **kwargs: object) -> None:
        raise RuntimeError("scorer exploded")

    monkeypatch.setattr(app.state.models.default.engine, "rerank", broken_rerank)
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as client:
        body = {"query": QUERY, "documents": [APPLE]}
        response = client.post("/rerank", json=body, headers={"X-Request-ID": "bug-1"})
        assert client.get("/health").status_code == 200  # and the app keeps serving
    message = assert_error_shape(response, 500, "internal_error")
    assert response.headers["x-request-id"] == "bug-1"
    assert "RuntimeError" in message and "bug-1" in message
    [entry] = [entry for entry in log_entries(tmp_path / "requests.jsonl") if entry["request_id"] == "bug-1"]
    assert entry["status"] == 500 and entry["documents"] == 1
    [record] = [record for record in caplog.records if "bug-1" in record.getMessage()]
    assert record.exc_info is not None and "scorer exploded" in str(record.exc_info[1])


def test_request_id_is_taken_or_generated_echoed_and_logged(limited_app: TestClient, tmp_path: Path) -> None:
    given = limited_app.get("/health", headers={"X-Request-ID": "client-chosen-42"})
    assert given.headers["x-request-id"] == "client-chosen-42"
    generated = [limited_app.get("/health").headers["x-request-id"] for _ in range(3)]
    too_long = limited_app.get("/health", headers={"X-Request-ID": "x" * 129}).headers["x-request-id"]
    for request_id in [*generated, too_long]:
        assert len(request_id) == 32 and int(request_id, 16) >= 0  # a fresh uuid4 hex
    assert len(set(generated)) == 3
    logged = [entry["request_id"] for entry in log_entries(tmp_path / "requests.jsonl")]
    assert logged == ["client-chosen-42", *generated, too_long]


# ---------------------------------------------------------------- request log rotation


def test_request_log_rotates_without_losing_or_splitting_lines_under_threads(tmp_path: Path) -> None:
    path = tmp_path / "log" / "requests.jsonl"
    log = RequestLog(path, max_bytes=8192, backups=500)
    threads, per_thread = 8, 150
    # Non-ASCII text and a lone surrogate (which RERANK_LOG_TEXT could carry) must not break a line.
    texts = ["plain", "naïve café ☕", "bad \ud800 surrogate"]

    def write(worker: int) -> None:
        for index in range(per_thread):
            log.write(RequestLogEntry(
                request_id=f"{worker}-{index}", method="POST", route="/rerank", status=200,
                latency_ms=1.0, query=texts[index % 3], document_texts=texts,
            ))

    workers = [threading.Thread(target=write, args=(worker,)) for worker in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    log.close()

    files = sorted(path.parent.iterdir())
    assert len(files) > 5 and all(file.name.startswith("requests.jsonl") for file in files)
    assert all(file.stat().st_size <= 8192 for file in files)
    entries = [json.loads(line) for file in files for line in file.read_text(encoding="utf-8").splitlines()]
    assert sorted(entry["request_id"] for entry in entries) == sorted(
        f"{worker}-{index}" for worker in range(threads) for index in range(per_thread)
    )
    assert {entry["query"] for entry in entries} == set(texts)


# ---------------------------------------------------------------- live server: metrics and disconnects

BATCH_PAIRS = 4


@pytest.fixture(scope="module")
def ops_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("ops")
    server = start_server(
        workdir, sidecar_env(workdir, cache_size="64", max_batch_pairs=str(BATCH_PAIRS), max_body_bytes="65536")
    )
    yield server
    server.stop()


def test_metrics_follow_requests_batches_cache_and_load(ops_sidecar: LiveServer) -> None:
    documents = [APPLE, QCD, "Bananas are yellow.", "Pears are green."]
    with ops_sidecar.client() as client:
        assert client.post("/warmup").status_code == 200
        before = scrape(client)
        for attempt in range(2):  # the second is answered from the score cache
            response = client.post("/rerank", json={"query": QUERY, "documents": documents},
                                   headers={"X-Request-ID": f"metrics-{attempt}"})
            assert response.status_code == 200 and response.headers["x-request-id"] == f"metrics-{attempt}"
        assert response.json()["results"][0]["index"] == 0
        assert client.get("/nowhere").status_code == 404
        assert client.post("/rerank", json={"query": ""}).status_code == 422
        after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("rerank_requests_total", route="/rerank", status="200") == 2
    assert delta("rerank_requests_total", route="/rerank", status="422") == 1
    assert delta("rerank_requests_total", route="other", status="404") == 1  # unknown paths share one label
    assert delta("rerank_request_latency_seconds_count", route="/rerank") == 3
    assert delta("rerank_request_latency_seconds_sum", route="/rerank") > 0
    assert delta("rerank_cache_misses_total", **OF_MODEL) == 4 and delta("rerank_cache_hits_total", **OF_MODEL) == 4
    assert delta("rerank_pairs_scored_total", **OF_MODEL) == 4  # only the first request reached the model
    assert delta("rerank_batch_pairs_sum", **OF_MODEL) == 4 and delta("rerank_batch_pairs_count", **OF_MODEL) == 1
    assert delta("rerank_batch_padded_tokens_count", **OF_MODEL) == 1
    assert delta("rerank_batch_padded_tokens_sum", **OF_MODEL) >= 4
    assert delta("rerank_batch_requests_count", **OF_MODEL) == 1
    assert sample(after, "rerank_queue_depth_pairs", **OF_MODEL) == 0
    assert sample(after, "rerank_model_loaded", **OF_MODEL) == 1
    assert sample(after, "rerank_model_loads_total", **OF_MODEL) == 1
    assert sample(after, "rerank_model_load_seconds", **OF_MODEL) > 0
    assert ('rerank_pairs_dropped_total', frozenset(OF_MODEL.items())) in after

    entries = {entry["request_id"]: entry for entry in map(json.loads, ops_sidecar.log_lines())}
    assert entries["metrics-0"]["status"] == 200 and entries["metrics-0"]["documents"] == 4


def test_streamed_body_over_the_limit_is_refused_with_413(ops_sidecar: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while reading
        yield b'{"query": "q", "documents": ["'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"]}'

    with ops_sidecar.client() as client:
        response = client.post("/rerank", content=chunks(), headers={"Content-Type": "application/json"})
        assert "65536 bytes" in assert_error_shape(response, 413, "payload_too_large")
        assert client.get("/health").status_code == 200


def _post_raw(url: str, path: str, body: dict, request_id: str) -> socket.socket:
    """Sends a request on a bare socket, so the test decides when the client goes away."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nX-Request-ID: {request_id}\r\n\r\n")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(head.encode() + payload)
    return sock


def _wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


@pytest.mark.parametrize("leaving", ["/rerank", "/v1/embeddings"])
def test_client_disconnect_drops_its_unscored_pairs_and_the_server_keeps_serving(
    ops_sidecar: LiveServer, leaving: str
) -> None:
    """The request that goes away reranks, or embeds (its texts are dropped as a rerank's pairs are)."""
    ahead, behind = 120, 120
    with ops_sidecar.client() as client:
        assert client.post("/warmup").status_code == 200
        before = scrape(client)

        def since(now: dict, name: str) -> float:
            return sample(now, name, **OF_MODEL) - sample(before, name, **OF_MODEL)

        def pairs() -> dict[str, float]:
            """Pairs scored and dropped since `before`, and queued now."""
            now = scrape(client)
            return {
                "scored": since(now, "rerank_pairs_scored_total"),
                "dropped": since(now, "rerank_pairs_dropped_total"),
                "queued": sample(now, "rerank_queue_depth_pairs", **OF_MODEL),
            }

        def accepted(total: int) -> bool:
            """Every pair of `total` is scored or queued, but for at most one batch in the model."""
            now = pairs()
            return now["scored"] + now["queued"] >= total - BATCH_PAIRS

        first: dict[str, httpx.Response] = {}

        def send_first() -> None:
            with ops_sidecar.client() as own:
                documents = [f"{APPLE} {leaving} {i}" for i in range(ahead)]  # unseen: none from the score cache
                first["response"] = own.post("/rerank", json={"query": QUERY, "documents": documents},
                                             headers={"X-Request-ID": "stays"})

        worker = threading.Thread(target=send_first)
        worker.start()
        _wait_until(lambda: accepted(ahead), 60, "the first request is queued")
        documents = [f"{QCD} {i}" for i in range(behind)]
        body = {"query": QUERY, "documents": documents} if leaving == "/rerank" else {"input": documents}
        gone = _post_raw(ops_sidecar.url, leaving, body, f"goes-away{leaving}")
        _wait_until(lambda: accepted(ahead + behind), 60, "the second request is queued behind the first")
        gone.close()
        worker.join(120)
        _wait_until(lambda: pairs()["scored"] + pairs()["dropped"] >= ahead + behind, 60, "every pair is settled")
        settled = pairs()

        assert first["response"].status_code == 200 and len(first["response"].json()["scores"]) == ahead
        assert settled["dropped"] > 0, "the client left after its pairs were scored: make the requests bigger"
        assert settled["scored"] + settled["dropped"] == ahead + behind and settled["queued"] == 0
        after = client.post("/rerank", json={"query": QUERY, "documents": [QCD, APPLE]})
        assert after.status_code == 200 and after.json()["results"][0]["index"] == 1

    entries = {entry["request_id"]: entry for entry in map(json.loads, ops_sidecar.log_lines())}
    assert entries[f"goes-away{leaving}"]["status"] == 499 and entries["stays"]["status"] == 200
