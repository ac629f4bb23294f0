"""Cohere/Jina and text-embeddings-inference compatible routes, /rerank/batch, /info and /v1/models against a live
sidecar, called by the official cohere SDK and Haystack's TEI ranker."""

from __future__ import annotations

import json
from collections.abc import Iterator

import cohere
import pytest
from conftest import LiveServer, sidecar_env, start_server

from rerank_sidecar.config import Settings
from rerank_sidecar.engine.budget import DEFAULT_BATCH_TOKENS

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

    It runs on fp32 torch on the CPU, on any host: /rerank/batch is held to equal separate calls to 1e-6, a
    bound set for fp32 (the CPU default, onnx int8, is held batch-independent to 1e-4; a GPU would serve fp16).
    """
    workdir = tmp_path_factory.mktemp("compat")
    settings = {"model_aliases": ALIAS, "max_documents": str(MAX_DOCUMENTS), "backend": "torch", "device": "cpu"}
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


def _component(schema: dict) -> list[str]:
    """The component names a (possibly union or array) schema refers to."""
    if "$ref" in schema:
        return [schema["$ref"].rsplit("/", 1)[-1]]
    if schema.get("type") == "array":
        return _component(schema["items"])
    return [name for option in schema.get("anyOf", schema.get("oneOf", [])) for name in _component(option)]


# Each route whose errors are not (only) native: the error schemas, and the keys of the example's error.
ERROR_SHAPES = {
    "/rerank": ({"ErrorResponse", "TeiErrorResponse"}, {"type", "message"}),
    "/v1/embeddings": ({"OpenAIErrorResponse"}, {"message", "type"}),  # param and code null: OpenAPI leaves them out
    "/embed": ({"TeiErrorResponse"}, {"error", "error_type"}),
}


def test_openapi_describes_every_route_with_examples(server: LiveServer) -> None:
    with server.client() as client:
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    paths = schema["paths"]
    assert {"/health", "/warmup", "/rerank", "/rerank/batch", "/v1/rerank", "/v2/rerank", "/info", "/v1/models",
            "/v1/embeddings", "/v2/embed", "/embed"} <= set(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            ok = operation["responses"]["200"]
            assert ok["description"] != "Successful Response", (path, method)
            response_models = _component(ok["content"]["application/json"]["schema"])
            assert response_models, (path, method)
            for response_model in response_models:
                assert components[response_model].get("examples"), (path, response_model)
            if method != "post":
                continue
            if "requestBody" in operation:
                for request_model in _component(operation["requestBody"]["content"]["application/json"]["schema"]):
                    assert components[request_model].get("examples"), path
            for status in ("400", "413", "422", "503"):
                error = operation["responses"][status]["content"]["application/json"]
                shapes, example_keys = ERROR_SHAPES.get(path, ({"ErrorResponse"}, {"type", "message"}))
                assert set(_component(error["schema"])) == shapes, (path, status)
                example = error["example"] if path == "/embed" else error["example"]["error"]
                assert set(example) == example_keys, (path, status)
    rerank_body = paths["/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(_component(rerank_body)) == {"RerankRequest", "TeiRerankRequest"}
    assert set(_component(paths["/rerank"]["post"]["responses"]["200"]["content"]["application/json"]["schema"])) == {
        "RerankResponse", "TeiRank"
    }


# --- text-embeddings-inference's shape at the root URL -------------------------------------------------------

# The embedded model reads 256 tokens: a [CLS], 254 of the document, a [SEP] (the query is embedded apart).
DOCUMENT_ROOM = 254


def tei(server: LiveServer, body: dict) -> tuple[int, object]:
    with server.client() as client:
        response = client.post("/rerank", json=body)
    return response.status_code, response.json()


def test_haystack_tei_ranker_matches_native_rerank(server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    from haystack import Document
    from haystack.components.rankers import HuggingFaceTEIRanker

    reference = native(server, QUERY, DOCUMENTS)
    ranker = HuggingFaceTEIRanker(url=server.url, top_k=len(DOCUMENTS), token=None)
    ranked = ranker.run(query=QUERY, documents=[Document(content=text) for text in DOCUMENTS])["documents"]
    assert [DOCUMENTS.index(document.content) for document in ranked] == [r["index"] for r in reference["results"]]
    for document, wanted in zip(ranked, reference["results"], strict=True):
        assert document.score == pytest.approx(wanted["relevance_score"], abs=1e-6)
    assert ranked[0].content == DOCUMENTS[3]  # Washington, D.C.
    log = [json.loads(line) for line in server.log_lines()]
    assert any(line["route"] == "/rerank" and line["status"] == 200 and line["documents"] == 5 for line in log)


def test_tei_raw_scores_and_return_text(server: LiveServer) -> None:
    with server.client() as client:
        raw_native = client.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}).json()
    status, ranks = tei(server, {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True, "return_text": True})
    assert status == 200
    assert [rank["index"] for rank in ranks] == [result["index"] for result in raw_native["results"]]
    for rank in ranks:
        assert rank["score"] == pytest.approx(raw_native["scores"][rank["index"]], abs=1e-6)
        assert rank["text"] == DOCUMENTS[rank["index"]]
    assert [rank["score"] for rank in ranks] == sorted((rank["score"] for rank in ranks), reverse=True)
    status, bare = tei(server, {"query": QUERY, "texts": DOCUMENTS})
    assert status == 200 and all(set(rank) == {"index", "score"} for rank in bare)
    assert all(0.0 <= rank["score"] <= 1.0 for rank in bare)


def test_tei_truncation_keeps_the_side_asked_for(server: LiveServer) -> None:
    start, end = "apple " * 300, "banana " * 300
    long_text = (start + end).strip()
    scores = {}
    for direction in ("Right", "Left", "left"):
        status, ranks = tei(server, {"query": QUERY, "texts": [long_text], "truncate": True,
                                     "truncation_direction": direction, "raw_scores": True})
        assert status == 200, ranks
        scores[direction] = ranks[0]["score"]
    with server.client() as client:
        kept = client.post("/rerank", json={"query": QUERY, "raw_scores": True, "documents": [
            ("apple " * DOCUMENT_ROOM).strip(), ("banana " * DOCUMENT_ROOM).strip(), long_text]}).json()["scores"]
    assert scores["Right"] == pytest.approx(kept[0], abs=1e-6)  # the first 254 tokens: apples only
    assert scores["Left"] == pytest.approx(kept[1], abs=1e-6)  # the last 254 tokens: bananas only
    assert scores["left"] == scores["Left"]  # TEI takes both spellings
    assert kept[2] == pytest.approx(kept[0], abs=1e-6)  # the native shape truncates on the right, unchanged
    assert abs(kept[0] - kept[1]) > 1e-3


def test_tei_refuses_an_over_long_text_without_truncate(server: LiveServer) -> None:
    long_text = "banana " * 400
    status, error = tei(server, {"query": QUERY, "texts": [DOCUMENTS[0], long_text], "truncate": False})
    assert status == 422
    assert error["error_type"] == "Validation"
    assert error["error"].startswith("texts.1:") and "max_input_length 256" in error["error"]
    assert "402 tokens" in error["error"]  # [CLS], 400 of text, [SEP]: the bi-encoder embeds the query apart
    status, fits = tei(server, {"query": QUERY, "texts": [DOCUMENTS[0]], "truncate": False})
    assert status == 200 and len(fits) == 1


@pytest.mark.parametrize(
    ("body", "status", "error_type", "named"),
    [
        ({"query": QUERY, "texts": []}, 400, "Empty", "`texts` cannot be empty"),
        ({"query": QUERY, "texts": ["a", 5]}, 422, "Validation", "texts.1"),
        ({"query": "  ", "texts": ["a"]}, 422, "Validation", "query"),
        ({"query": QUERY, "texts": ["a"], "truncation_direction": "Up"}, 422, "Validation", "truncation_direction"),
        ({"query": QUERY, "texts": ["a"] * (MAX_DOCUMENTS + 1)}, 422, "Validation", "RERANK_MAX_DOCUMENTS"),
    ],
)
def test_tei_errors_come_in_tei_shape(server: LiveServer, body: dict, status: int, error_type: str, named: str) -> None:
    got_status, error = tei(server, body)
    assert got_status == status, error
    assert set(error) == {"error", "error_type"} and error["error_type"] == error_type
    assert named in error["error"]


def test_a_body_with_documents_and_texts_is_refused_clearly(server: LiveServer) -> None:
    status, error = tei(server, {"query": QUERY, "documents": DOCUMENTS, "texts": DOCUMENTS})
    assert status == 422
    assert "`documents`" in error["error"]["message"] and "`texts`" in error["error"]["message"]
    assert "not both" in error["error"]["message"]


def test_info_reports_the_running_settings(server: LiveServer) -> None:
    with server.client() as client:
        info = client.get("/info").json()
        health = client.get("/health").json()
    assert info["model_id"] == info["served_model_name"] == SERVED
    assert health["device"] == "cpu"  # the fixture's; what follows are the CPU's defaults, read from the code
    assert info["model_sha"] == health["revision"] and info["model_dtype"] == health["dtype"] == "float32"
    # The embedded default embeds: TEI's embedding variant, its pooling, and the embedding request limit.
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_client_batch_size"] == Settings.model_fields["max_embed_inputs"].default
    assert info["max_input_length"] == 256
    assert info["max_batch_tokens"] == DEFAULT_BATCH_TOKENS["cpu"]
    assert info["max_batch_requests"] == Settings.model_fields["max_batch_pairs"].default
    assert info["max_concurrent_requests"] == 20000 and info["auto_truncate"] is True
    assert info["version"] == health["version"]


def test_v1_models_lists_the_model_and_its_aliases(server: LiveServer) -> None:
    with server.client() as client:
        listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [card["id"] for card in listing["data"]] == [SERVED, ALIAS]
    assert all(card["root"] == SERVED and card["object"] == "model" for card in listing["data"])
    assert all(card["max_model_len"] == 256 and card["created"] > 1_700_000_000 for card in listing["data"])
    assert all(set(card["tasks"]) == {"rerank", "embed"} for card in listing["data"])
