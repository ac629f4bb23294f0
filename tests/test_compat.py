"""Cohere/Jina-compatible routes and /rerank/batch against a live sidecar, called by the official cohere SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import cohere
import pytest
from conftest import LiveServer, sidecar_env, start_server

SERVED = "builtin:all-MiniLM-L6-v2"
ALIAS = "rerank-v3.5"
MAX_DOCUMENTS = 20
QUERY = "What is the capital of the United States?"
DOCUMENTS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Northern Mariana Islands are a group of islands in the Pacific Ocean. Its capital is Saipan.",
    "Capitalization in English grammar is the use of a capital letter at the start of a word.",
    "Washington, D.C. (also known as the District of Columbia) is the capital of the United States.",
    "Capital punishment has existed in the United States since before it was a country.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The embedded model with one alias and a small document limit (so limit errors are cheap to provoke).

    It runs on fp32 torch: /rerank/batch is held to equal separate calls to 1e-6, a bound set for fp32
    (the CPU default, onnx int8, is held batch-independent to 1e-4).
    """
    workdir = tmp_path_factory.mktemp("compat")
    settings = {"model_aliases": ALIAS, "max_documents": str(MAX_DOCUMENTS), "backend": "torch"}
    live = start_server(workdir, sidecar_env(workdir, **settings))
    yield live
    live.stop()


def native(server: LiveServer, query: str, documents: list[str]) -> dict:
    with server.client() as client:
        response = client.post("/rerank", json={"query": query, "documents": documents})
    assert response.status_code == 200, response.text
    return response.json()


def assert_same_ranking(results: list, reference: dict) -> None:
    """SDK results (objects) match /rerank's results: same order, same scores to 1e-6."""
    expected = reference["results"]
    assert [result.index for result in results] == [result["index"] for result in expected]
    for result, wanted in zip(results, expected, strict=True):
        assert result.relevance_score == pytest.approx(wanted["relevance_score"], abs=1e-6)


def test_sdk_v2_matches_native_rerank(server: LiveServer) -> None:
    reference = native(server, QUERY, DOCUMENTS)
    client = cohere.ClientV2(base_url=server.url, api_key="x")
    answer = client.rerank(model=ALIAS, query=QUERY, documents=DOCUMENTS, top_n=len(DOCUMENTS) + 10)
    assert len(answer.results) == len(DOCUMENTS)  # top_n larger than the list returns all
    assert_same_ranking(answer.results, reference)
    assert answer.results[0].index == 3  # Washington, D.C.
    assert answer.meta.billed_units.search_units == 1
    assert answer.id and answer.usage["total_tokens"] > 0

    top = client.rerank(model=SERVED, query=QUERY, documents=DOCUMENTS, top_n=2, max_tokens_per_doc=4096)
    assert_same_ranking(top.results, {"results": reference["results"][:2]})


def test_sdk_v1_matches_native_with_object_documents(server: LiveServer) -> None:
    reference = native(server, QUERY, DOCUMENTS)
    client = cohere.Client(base_url=server.url, api_key="x")
    objects = [{"text": text, "source": f"doc-{index}"} for index, text in enumerate(DOCUMENTS)]
    answer = client.rerank(model=ALIAS, query=QUERY, documents=objects, return_documents=True)
    assert_same_ranking(answer.results, reference)
    for result in answer.results:  # the whole object comes back, extra keys included
        assert result.document.text == DOCUMENTS[result.index]
        assert result.document.source == f"doc-{result.index}"

    plain = client.rerank(query=QUERY, documents=DOCUMENTS, top_n=3)
    assert_same_ranking(plain.results, {"results": reference["results"][:3]})
    assert all(result.document is None for result in plain.results)


def test_sdk_v1_rank_fields_score_the_named_keys(server: LiveServer) -> None:
    records = [{"title": f"Entry {index}", "body": text} for index, text in enumerate(DOCUMENTS)]
    as_text = [f"title: Entry {index}\nbody: {text}" for index, text in enumerate(DOCUMENTS)]
    answer = cohere.Client(base_url=server.url, api_key="x").rerank(
        query=QUERY, documents=records, rank_fields=["title", "body"]
    )
    assert_same_ranking(answer.results, native(server, QUERY, as_text))


def test_model_outside_the_aliases_is_refused(server: LiveServer) -> None:
    with pytest.raises(cohere.errors.BadRequestError) as refused:
        cohere.ClientV2(base_url=server.url, api_key="x").rerank(
            model="rerank-english-v2.0", query=QUERY, documents=DOCUMENTS
        )
    assert refused.value.status_code == 400
    message = refused.value.body["error"]["message"]
    assert "rerank-english-v2.0" in message and SERVED in message and ALIAS in message
    with server.client() as client:
        for name in ("", SERVED, ALIAS):
            response = client.post("/v1/rerank", json={"model": name, "query": QUERY, "documents": DOCUMENTS})
            assert response.status_code == 200, (name, response.text)
        refused_v1 = client.post(
            "/v1/rerank", json={"model": "jina-reranker-v2", "query": QUERY, "documents": DOCUMENTS}
        )
    assert refused_v1.status_code == 400 and "jina-reranker-v2" in refused_v1.json()["error"]["message"]


def test_strings_objects_top_n_and_return_documents(server: LiveServer) -> None:
    mixed = [DOCUMENTS[0], {"text": DOCUMENTS[3]}, DOCUMENTS[4]]
    reference = native(server, QUERY, [DOCUMENTS[0], DOCUMENTS[3], DOCUMENTS[4]])
    with server.client() as client:
        echoed = client.post("/v2/rerank", json={"query": QUERY, "documents": mixed, "return_documents": True}).json()
        bare = client.post("/v1/rerank", json={"query": QUERY, "documents": mixed, "top_n": 1}).json()
    assert [result["index"] for result in echoed["results"]] == [result["index"] for result in reference["results"]]
    by_index = {result["index"]: result["document"] for result in echoed["results"]}
    assert by_index == {0: {"text": DOCUMENTS[0]}, 1: {"text": DOCUMENTS[3]}, 2: {"text": DOCUMENTS[4]}}
    assert len(bare["results"]) == 1 and bare["results"][0]["index"] == 1 and "document" not in bare["results"][0]
    assert bare["results"][0]["relevance_score"] == pytest.approx(reference["results"][0]["relevance_score"], abs=1e-6)
    log = [json.loads(line) for line in server.log_lines()]
    assert any(line["route"] == "/v2/rerank" and line["status"] == 200 and line["documents"] == 3 for line in log)


@pytest.mark.parametrize("route", ["/v1/rerank", "/v2/rerank"])
@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"documents": ["a"]}, "query"),
        ({"query": "  ", "documents": ["a"]}, "query"),
        ({"query": "q"}, "documents"),
        ({"query": "q", "documents": "a"}, "documents"),
        ({"query": "q", "documents": ["a", 5]}, "documents.1"),
        ({"query": "q", "documents": [{"title": "no text"}]}, "documents.0.text"),
        ({"query": "q", "documents": [{"text": "a"}], "rank_fields": ["title"]}, "documents.0.title"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc"),
        ({"query": "q", "documents": ["a"], "max_chunks_per_doc": 99}, "max_chunks_per_doc"),
        ({"query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}, "documents"),
        ({"query": "q", "documents": ["a"], "return_documents": "perhaps"}, "return_documents"),
    ],
)
def test_bad_inputs_name_the_field(server: LiveServer, route: str, body: dict, named: str) -> None:
    with server.client() as client:
        response = client.post(route, json=body)
    assert 400 <= response.status_code < 500, response.text
    message = response.json()["error"]["message"]
    assert named in message
    if named == "max_chunks_per_doc":
        assert "8" in message and "RERANK_MAX_CHUNKS_PER_DOC" in message
    if body.get("documents") == ["a"] * (MAX_DOCUMENTS + 1):
        assert str(MAX_DOCUMENTS) in message


def test_batch_equals_separate_calls(server: LiveServer) -> None:
    groups = [
        {"query": QUERY, "documents": DOCUMENTS},
        {"query": "Which island group has Saipan as its capital?", "documents": DOCUMENTS[:3]},
        {"query": "What fruit is red?", "documents": ["An apple is a red, crunchy fruit.", "Bananas are yellow."]},
    ]
    with server.client() as client:
        batch = client.post("/rerank/batch", json={"groups": groups, "top_n": 2, "return_documents": True})
        raw = client.post("/rerank/batch", json={"groups": groups, "raw_scores": True}).json()
        assert batch.status_code == 200, batch.text
        separate = [
            client.post("/rerank", json={**group, "top_n": 2, "return_documents": True}).json() for group in groups
        ]
        separate_raw = [client.post("/rerank", json={**group, "raw_scores": True}).json() for group in groups]
    answer = batch.json()
    assert answer["model"] == SERVED and len(answer["groups"]) == 3
    for got, want in zip(answer["groups"], separate, strict=True):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-6)
        assert [r["index"] for r in got["results"]] == [r["index"] for r in want["results"]]
        assert [r["document"] for r in got["results"]] == [r["document"] for r in want["results"]]
        assert len(got["results"]) == 2 and got["truncated"] == want["truncated"] == []
    for got, want in zip(raw["groups"], separate_raw, strict=True):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"groups": []}, "groups"),
        ({"groups": [{"query": "q", "documents": ["a"]}, {"query": "", "documents": ["a"]}]}, "groups.1.query"),
        ({"groups": [{"query": "q", "documents": ["a"]}, {"query": "q", "documents": [3]}]}, "groups.1.documents.0"),
        ({"groups": [{"query": "q", "documents": ["a"] * 15}] * 2}, "groups"),
        ({"groups": [{"query": "q", "documents": ["a"]}], "model": "gpt-4"}, "gpt-4"),
    ],
)
def test_batch_bad_inputs_name_the_field(server: LiveServer, body: dict, named: str) -> None:
    with server.client() as client:
        response = client.post("/rerank/batch", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert named in response.json()["error"]["message"]


def test_openapi_describes_every_route_with_examples(server: LiveServer) -> None:
    with server.client() as client:
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    paths = schema["paths"]
    assert {"/health", "/warmup", "/rerank", "/rerank/batch", "/v1/rerank", "/v2/rerank"} <= set(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            ok = operation["responses"]["200"]
            assert ok["description"] != "Successful Response", (path, method)
            response_model = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
            assert components[response_model].get("examples"), (path, response_model)
            if method != "post":
                continue
            if "requestBody" in operation:
                request_model = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert components[request_model.rsplit("/", 1)[-1]].get("examples"), path
            for status in ("400", "413", "422", "503"):
                error = operation["responses"][status]["content"]["application/json"]
                assert error["schema"]["$ref"].endswith("/ErrorResponse"), (path, status)
                assert set(error["example"]["error"]) == {"type", "message"}

