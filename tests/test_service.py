"""The native contract on the embedded default model, through a live server."""

from __future__ import annotations

import concurrent.futures
import json

APPLE = "An apple is a red, crunchy fruit."
QCD = "Quantum chromodynamics describes the strong interaction."
QUERY = "What fruit is red and crunchy?"


def test_health_before_warmup_then_rerank(sidecar_factory) -> None:
    server = sidecar_factory()
    with server.client() as client:
        health = client.get("/health").json()
        assert health["status"] == "idle" and health["model_loaded"] is False
        assert health["model"] == "builtin:all-MiniLM-L6-v2"

        warm = client.post("/warmup").json()
        assert warm["status"] == "ready" and warm["family"] == "bi-encoder" and warm["already_loaded"] is False
        assert client.post("/warmup").json()["already_loaded"] is True

        health = client.get("/health").json()
        assert health["model_loaded"] is True and health["family"] == "bi-encoder"

        body = client.post("/rerank", json={"query": QUERY, "documents": [QCD, APPLE], "return_documents": True}).json()
        assert [result["index"] for result in body["results"]] == [1, 0]
        assert body["results"][0]["document"] == APPLE
        assert all(0.0 <= score <= 1.0 for score in body["scores"])
        assert body["scores"][1] > body["scores"][0]


def test_raw_scores_top_n_and_empty_documents(builtin_sidecar) -> None:
    with builtin_sidecar.client() as client:
        raw = client.post("/rerank", json={"query": QUERY, "documents": [QCD, APPLE], "raw_scores": True}).json()
        norm = client.post("/rerank", json={"query": QUERY, "documents": [QCD, APPLE], "top_n": 1}).json()
        assert len(norm["results"]) == 1 and norm["results"][0]["index"] == 1
        assert "document" not in norm["results"][0]
        assert len(norm["scores"]) == 2
        # raw = cosine; normalized is a monotone map of it
        assert -1.0 <= raw["scores"][0] < raw["scores"][1] <= 1.0
        assert norm["scores"][0] < norm["scores"][1]
        empty = client.post("/rerank", json={"query": QUERY, "documents": []})
        assert empty.status_code == 200 and empty.json()["results"] == [] and empty.json()["scores"] == []


def test_concurrent_first_calls_load_once(sidecar_factory) -> None:
    server = sidecar_factory()

    def call(i: int) -> int:
        with server.client() as client:
            route = "/warmup" if i % 2 else "/rerank"
            payload = None if i % 2 else {"query": QUERY, "documents": [APPLE]}
            return client.post(route, json=payload).status_code

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(call, range(20)))
    assert statuses == [200] * 20
    with server.client() as client:
        metrics = client.get("/metrics").text
    assert 'rerank_model_loads_total{model="builtin:all-MiniLM-L6-v2"} 1.0' in metrics


def test_log_lines_match_requests(sidecar_factory) -> None:
    server = sidecar_factory()
    with server.client() as client:
        client.get("/health", headers={"X-Request-ID": "probe-1"})
        client.post("/rerank", json={"query": QUERY, "documents": [APPLE, QCD]}, headers={"X-Request-ID": "rr-2"})
        client.post("/rerank", json={"query": ""}, headers={"X-Request-ID": "bad-3"})
    lines = [json.loads(line) for line in server.log_lines()]
    by_id = {line["request_id"]: line for line in lines}
    assert {"probe-1", "rr-2", "bad-3"} <= set(by_id)
    assert len(lines) == 4  # the three above and the fixture's readiness probe
    assert by_id["rr-2"]["status"] == 200 and by_id["rr-2"]["documents"] == 2
    assert by_id["rr-2"]["chars"] == len(QUERY) + len(APPLE) + len(QCD)
    assert by_id["rr-2"]["model"] == "builtin:all-MiniLM-L6-v2"
    assert by_id["bad-3"]["status"] == 422 and by_id["probe-1"]["route"] == "/health"
    assert all("query" not in line and "document_texts" not in line for line in lines)
