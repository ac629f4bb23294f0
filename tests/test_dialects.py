"""Each error status on each rerank dialect, status and body shape, on in-process apps (no model is ever loaded),
plus the one scoring entry seen from every dialect on a tiny model.

Dialects: native /rerank, TEI-shaped /rerank (`texts`), Cohere/Jina /v1/rerank and /v2/rerank, /rerank/batch, and
the embedding routes: OpenAI's /v1/embeddings, Cohere's /v2/embed, TEI's /embed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from rerank_sidecar.api.app import create_app
from rerank_sidecar.api.dialect import PEEK_BYTES, Dialect, body_dialect, top_level_keys
from rerank_sidecar.config import Settings

QUERY = "What fruit is red and crunchy?"
APPLE = "An apple is a red, crunchy fruit."
KEY = "s3cret-key"
MAX_BODY_BYTES = 4096
# An absolute path that is no directory is no hub id either: the model cannot load, offline, at once.
UNLOADABLE = "/nonexistent/rerank-model"


@dataclass(frozen=True)
class WireDialect:
    """One way to call the sidecar: where, a valid body, and the error shape it is answered in."""

    name: str
    path: str
    body: dict
    dialect: Dialect
    # Per status, the body that provokes it when it is the body's fault.
    bad: dict[int, dict] = field(default_factory=dict)
    # The field holding the texts, and the error type and words of the 400 of `bad`.
    texts_key: str = "documents"
    type_400: str = "model_not_served"
    says_400: str = "is not served here"

    def padded(self, size: int) -> dict:
        """The valid body with its one text grown past `size` bytes."""
        if self.path == "/rerank/batch":
            return {"groups": [{"query": QUERY, "documents": ["x" * size]}]}
        return {**self.body, self.texts_key: ["x" * size]}


DIALECTS = [
    WireDialect("native", "/rerank", {"query": QUERY, "documents": [APPLE]}, Dialect.NATIVE, {
        400: {"query": QUERY, "documents": [APPLE], "model": "gpt-4"},
        422: {"query": QUERY, "documents": "not a list"},
    }),
    WireDialect("tei", "/rerank", {"query": QUERY, "texts": [APPLE]}, Dialect.TEI, {
        400: {"query": QUERY, "texts": []},
        422: {"query": QUERY, "texts": [APPLE, 5]},
    }, texts_key="texts", type_400="empty", says_400="`texts` cannot be empty"),
    *[
        WireDialect(version, f"/{version}/rerank", {"query": QUERY, "documents": [APPLE]}, Dialect.NATIVE, {
            400: {"model": "rerank-english-v2.0", "query": QUERY, "documents": [APPLE]},
            422: {"query": QUERY, "documents": [{"title": "no text"}]},
        })
        for version in ("v1", "v2")
    ],
    WireDialect("batch", "/rerank/batch", {"groups": [{"query": QUERY, "documents": [APPLE]}]}, Dialect.NATIVE, {
        400: {"groups": [{"query": QUERY, "documents": [APPLE]}], "model": "gpt-4"},
        422: {"groups": []},
    }),
    WireDialect("openai-embeddings", "/v1/embeddings", {"input": [APPLE]}, Dialect.OPENAI, {
        400: {"input": [APPLE], "model": "text-embedding-3-small"},
        422: {"input": [APPLE], "encoding_format": "int8"},
    }, texts_key="input"),
    WireDialect("cohere-embed", "/v2/embed", {"texts": [APPLE], "input_type": "search_query"}, Dialect.NATIVE, {
        400: {"texts": [APPLE], "embedding_types": ["ubinary"]},
        422: {"texts": APPLE},
    }, texts_key="texts", type_400="validation_error", says_400="'ubinary' is not served"),
    WireDialect("tei-embed", "/embed", {"inputs": [APPLE]}, Dialect.TEI, {
        400: {"inputs": []},
        422: {"inputs": [APPLE, 5]},
    }, texts_key="inputs", type_400="empty", says_400="inputs: send at least one text"),
]

# Each status: the native error type, TEI's error_type.
ERROR_TYPES = {
    400: ("model_not_served", "Empty"),
    401: ("unauthorized", "Validation"),
    413: ("payload_too_large", "Validation"),
    422: ("validation_error", "Validation"),
    503: ("model_unavailable", "Unhealthy"),
}


def assert_dialect_error(
    response: httpx.Response, status: int, wire: WireDialect, native_type: str | None = None
) -> str:
    """The status, and the error body in `wire`'s shape (of `native_type`, else the status's); returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "x-request-id" in response.headers
    body = response.json()
    native_type, tei_type = native_type or ERROR_TYPES[status][0], ERROR_TYPES[status][1]
    if wire.dialect is Dialect.TEI:
        assert set(body) == {"error", "error_type"} and body["error_type"] == tei_type, body
        return body["error"]
    if wire.dialect is Dialect.OPENAI:
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
        assert body["error"]["type"] == native_type and body["error"]["code"] is None, body
        return body["error"]["message"]
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    assert body["error"]["type"] == native_type, body
    return body["error"]["message"]


def settings(tmp_path: Path, **overrides: object) -> Settings:
    """Only the given values: no RERANK_* from the caller's environment, no .env file."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("RERANK_")]:
            patch.delenv(key)
        return Settings(_env_file=None, log_path=tmp_path / "requests.jsonl", cache_dir=tmp_path / "cache", **overrides)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dialects")


@pytest.fixture(scope="module")
def unloadable_app(module_tmp: Path) -> Iterator[TestClient]:
    """A sidecar whose model cannot load, with a small body limit: every error status but 401, no model loaded."""
    app = create_app(settings(module_tmp / "open", model_name=UNLOADABLE, max_body_bytes=MAX_BODY_BYTES))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def keyed_app(module_tmp: Path) -> Iterator[TestClient]:
    app = create_app(settings(module_tmp / "keyed", model_name=UNLOADABLE, api_key=KEY))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


by_name = pytest.mark.parametrize("wire", DIALECTS, ids=lambda wire: wire.name)


@by_name
@pytest.mark.parametrize("status", [400, 422])
def test_a_bad_body_is_answered_in_its_dialect(unloadable_app: TestClient, wire: WireDialect, status: int) -> None:
    response = unloadable_app.post(wire.path, json=wire.bad[status])
    message = assert_dialect_error(response, status, wire, wire.type_400 if status == 400 else None)
    if status == 400:
        assert wire.says_400 in message


@by_name
def test_401_without_the_key_is_answered_in_the_body_dialect(keyed_app: TestClient, wire: WireDialect) -> None:
    response = keyed_app.post(wire.path, json=wire.body)
    assert "RERANK_API_KEY" in assert_dialect_error(response, 401, wire)
    assert response.headers["www-authenticate"] == 'Bearer realm="rerank-sidecar"'


@by_name
def test_413_over_the_body_limit_is_answered_in_the_body_dialect(unloadable_app: TestClient, wire: WireDialect) -> None:
    response = unloadable_app.post(wire.path, json=wire.padded(MAX_BODY_BYTES))
    assert f"{MAX_BODY_BYTES} bytes" in assert_dialect_error(response, 413, wire)


@by_name
def test_503_for_a_model_that_cannot_load_is_answered_in_its_dialect(
    unloadable_app: TestClient, wire: WireDialect
) -> None:
    response = unloadable_app.post(wire.path, json=wire.body)
    assert UNLOADABLE in assert_dialect_error(response, 503, wire)
    assert response.headers["retry-after"].isdigit()


TEI = next(wire for wire in DIALECTS if wire.name == "tei")


def test_a_streamed_tei_body_over_the_limit_is_a_tei_413(unloadable_app: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
        yield b'{"query": "q", "texts": ["'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"]}'

    response = unloadable_app.post("/rerank", content=chunks(), headers={"Content-Type": "application/json"})
    assert_dialect_error(response, 413, TEI)


def test_a_tei_body_longer_than_the_peek_reaches_the_route_whole(unloadable_app: TestClient, module_tmp: Path) -> None:
    """The bytes read to decide are replayed: a body past PEEK_BYTES parses, and is refused only for the model."""
    app = create_app(settings(module_tmp / "wide", model_name=UNLOADABLE))
    body = {"query": QUERY, "texts": ["y" * (PEEK_BYTES // 2)] * 3}
    with TestClient(app, raise_server_exceptions=False) as client:
        assert_dialect_error(client.post("/rerank", json=body), 503, TEI)
        over = create_app(settings(module_tmp / "narrow", model_name=UNLOADABLE, max_body_bytes=PEEK_BYTES))
    with TestClient(over, raise_server_exceptions=False) as client:
        assert_dialect_error(client.post("/rerank", json=body), 413, TEI)


def test_a_body_with_both_shapes_is_refused_in_the_native_shape(unloadable_app: TestClient) -> None:
    response = unloadable_app.post("/rerank", json={"query": QUERY, "texts": [APPLE], "documents": [APPLE]})
    assert "not both" in assert_dialect_error(response, 422, DIALECTS[0])


@pytest.mark.parametrize(
    ("prefix", "keys", "dialect"),
    [
        (b'{"query": "q", "texts": ["a"]}', ["query", "texts"], Dialect.TEI),
        (b' {"texts" : ["a"] , "query":"q"}', ["texts", "query"], Dialect.TEI),
        (b'{"query": "say \\"texts\\":", "documents": [{"texts": 1}]}', ["query", "documents"], Dialect.NATIVE),
        (b'{"a": {"texts": [1, {"b": 2}]}, "c": 3}', ["a", "c"], Dialect.NATIVE),
        (b'{"\\u0074exts": []}', ["texts"], Dialect.TEI),
        (b'{"texts": [], "documents": []}', ["texts", "documents"], Dialect.NATIVE),
        (b'{"query": "cut sho', ["query"], Dialect.NATIVE),  # a value the peek cuts ends the keys
        (b'{"query": "a", "texts": ["x", "y", "z', ["query", "texts"], Dialect.TEI),
        (b'[{"texts": 1}]', [], Dialect.NATIVE),
        (b"query=q&texts=a", [], Dialect.NATIVE),
        (b"", [], Dialect.NATIVE),
    ],
)
def test_the_dialect_of_a_body_prefix(prefix: bytes, keys: list[str], dialect: Dialect) -> None:
    assert list(top_level_keys(prefix)) == keys
    assert body_dialect(prefix) is dialect


# ---------------------------------------------------------------- every dialect, one scoring entry (tiny model)


@pytest.fixture(scope="module")
def tiny_app(module_tmp: Path, tiny_cross_encoder_dir: Path) -> Iterator[TestClient]:
    app = create_app(settings(module_tmp / "tiny", model_name=str(tiny_cross_encoder_dir), backend="torch", threads=1))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


DOCUMENTS = [APPLE, "Bananas are yellow.", "Quantum chromodynamics describes the strong interaction."]


def test_every_dialect_scores_alike(tiny_app: TestClient) -> None:
    native = tiny_app.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    raw = tiny_app.post("/rerank", json={"query": QUERY, "documents": DOCUMENTS, "raw_scores": True}).json()
    order = [result["index"] for result in native["results"]]
    assert native["scores"] != raw["scores"] and order == [result["index"] for result in raw["results"]]
    tei = tiny_app.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
    assert [rank["index"] for rank in tei] == order
    assert [rank["score"] for rank in tei] == pytest.approx([raw["scores"][index] for index in order], abs=1e-6)
    batch = tiny_app.post("/rerank/batch", json={"groups": [{"query": QUERY, "documents": DOCUMENTS}] * 2}).json()
    assert [group["scores"] for group in batch["groups"]] == [pytest.approx(native["scores"], abs=1e-6)] * 2
    for path in ("/v1/rerank", "/v2/rerank"):
        compat = tiny_app.post(path, json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2}).json()
        assert [result["index"] for result in compat["results"]] == order[:2]
        assert [result["relevance_score"] for result in compat["results"]] == pytest.approx(
            [native["scores"][index] for index in order[:2]], abs=1e-6
        )


def test_cohere_document_objects_are_echoed_as_sent(tiny_app: TestClient) -> None:
    sent = [APPLE, {"text": DOCUMENTS[1], "title": "Bananas", "source": None, "rank": 2}]
    answer = tiny_app.post("/v2/rerank", json={"query": QUERY, "documents": sent, "return_documents": True}).json()
    echoed = {result["index"]: result["document"] for result in answer["results"]}
    assert echoed == {0: {"text": APPLE}, 1: sent[1]}
