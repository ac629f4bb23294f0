"""Request and response models of the Cohere/Jina-compatible routes, `POST /v1/rerank` and `POST /v2/rerank`.

They follow what the official `cohere` SDK sends and parses (v1 `Client.rerank`, v2
`ClientV2.rerank`) and what Jina-style clients (LangChain, LlamaIndex, LiteLLM, Haystack) send.
Fields of those APIs that this sidecar has no use for (`priority`, `relevant_spans`) are accepted
and ignored, as pydantic ignores unknown fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictBool, field_validator, model_validator

from .schemas import _not_blank


class DocumentObject(BaseModel):
    """A document given as an object: scored on `text`, or on the keys `rank_fields` names; every key is echoed back."""

    model_config = ConfigDict(extra="allow")

    text: str | None = Field(None, description="The document text; required unless `rank_fields` names other keys.")


def echoed_document(document: str | DocumentObject) -> dict[str, Any]:
    """A document as the compatible routes return it: `{text}` for a string, an object's keys as sent (nulls too)."""
    return {"text": document} if isinstance(document, str) else document.model_dump(exclude_unset=True)


class CompatRerankRequest(BaseModel):
    """Cohere/Jina rerank request: one query against a list of documents."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "rerank-v3.5",
                    "query": "What is the capital of the United States?",
                    "documents": [
                        "Carson City is the capital city of the American state of Nevada.",
                        {"text": "Washington, D.C. is the capital of the United States."},
                    ],
                    "top_n": 1,
                    "return_documents": True,
                }
            ]
        }
    )

    model: str | None = Field(
        None, description="Empty, the served model id, or one of RERANK_MODEL_ALIASES; anything else is refused."
    )
    query: str = Field(description="The search query; must not be empty.")
    documents: list[str | DocumentObject] = Field(
        description="Texts to score, each a string or an object with `text` (other keys are echoed back)."
    )
    top_n: int | None = Field(
        None, ge=1, description="Return only the best n results; more than the documents returns all."
    )
    return_documents: StrictBool = Field(False, description="Echo each document (as `{text, ...}`) in its result.")
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="Cut each document to its first n tokens before scoring (Cohere v2)."
    )
    max_chunks_per_doc: int | None = Field(
        None,
        ge=1,
        description="Score long documents as up to n overlapping windows and keep the best (Cohere v1); "
        "at most RERANK_MAX_CHUNKS_PER_DOC.",
    )
    rank_fields: list[str] | None = Field(
        None,
        min_length=1,
        description="Object documents only: score these keys as `key: value` lines, in this order (Cohere v1).",
    )

    _texts: list[str] = PrivateAttr(default_factory=list)

    _query_not_blank = field_validator("query")(_not_blank)

    @model_validator(mode="after")
    def _resolve_texts(self) -> CompatRerankRequest:
        self._texts = [
            document if isinstance(document, str) else _ranked_text(document, self.rank_fields, index)
            for index, document in enumerate(self.documents)
        ]
        return self

    @property
    def texts(self) -> list[str]:
        """The text each document is scored on, in input order."""
        return self._texts


def _ranked_text(document: DocumentObject, rank_fields: list[str] | None, index: int) -> str:
    """`text`, or (with rank_fields) the named keys as `key: value` lines, the way Cohere v1 reads objects."""
    if rank_fields is None:
        if document.text is None:
            raise ValueError(f"documents.{index}.text: a document object needs a 'text' string (or set rank_fields)")
        return document.text
    fields = document.model_dump()
    lines = []
    for name in rank_fields:
        value = fields.get(name)
        if not isinstance(value, str):
            raise ValueError(f"documents.{index}.{name}: rank_fields names {name!r}, so it must be a string")
        lines.append(f"{name}: {value}")
    return "\n".join(lines)


class CompatRerankResult(BaseModel):
    """One document in `results`, best first."""

    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(description="Relevance in [0, 1].")
    document: dict[str, Any] | None = Field(
        None, description="With return_documents: `{text}` for a string, an object with every key as sent."
    )


class BilledUnits(BaseModel):
    """Cohere's billing counters; only search units apply to rerank."""

    search_units: int = Field(description="One per query and started hundred documents, as Cohere counts them.")


class CompatMeta(BaseModel):
    """Cohere's `meta` block."""

    billed_units: BilledUnits = Field(description="What this request would count as on Cohere.")
    warnings: list[str] | None = Field(None, description="Documents part of whose text went unscored, when any.")


class CompatUsage(BaseModel):
    """Jina/OpenAI-style token usage."""

    prompt_tokens: int = Field(description="Tokens the model read for this request (every scored window).")
    total_tokens: int = Field(description="Same as prompt_tokens: a reranker produces no tokens.")


class CompatRerankResponse(BaseModel):
    """Cohere/Jina rerank response."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5b0c6f1e2d7a4e3f9a8b7c6d5e4f3a2b",
                    "model": "builtin:all-MiniLM-L6-v2",
                    "results": [
                        {
                            "index": 1,
                            "relevance_score": 0.93,
                            "document": {"text": "Washington, D.C. is the capital of the United States."},
                        }
                    ],
                    "meta": {"billed_units": {"search_units": 1}},
                    "usage": {"prompt_tokens": 31, "total_tokens": 31},
                }
            ]
        }
    )

    id: str = Field(description="The request id (also the X-Request-ID header and the log line's request_id).")
    model: str = Field(description="Served model id.")
    results: list[CompatRerankResult] = Field(description="Documents best first, top_n applied.")
    meta: CompatMeta = Field(description="Billing counters and warnings.")
    usage: CompatUsage = Field(description="Tokens read.")


CohereInputType = Literal["search_query", "search_document", "classification", "clustering"]
CohereTruncate = Literal["NONE", "START", "END"]


class CohereEmbedRequest(BaseModel):
    """Cohere v2 embed (`ClientV2.embed`): texts only; images and `inputs` are not served."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "builtin:all-MiniLM-L6-v2",
                    "texts": ["What is Deep Learning?"],
                    "input_type": "search_query",
                    "embedding_types": ["float"],
                    "truncate": "END",
                }
            ]
        }
    )

    texts: list[str] = Field(description="Texts to embed, each non-empty; at most RERANK_MAX_EMBED_INPUTS.")
    model: str | None = Field(None, description="A name or alias from /v1/models; empty: the default model.")
    input_type: CohereInputType | None = Field(
        None,
        description="search_query / search_document: the model's query / document prompt, when it has one; "
        "classification, clustering: no prompt; absent: the model's default prompt.",
    )
    embedding_types: list[str] = Field(
        default_factory=lambda: ["float"], description="Only float is served; any other type is a 400 naming it."
    )
    truncate: CohereTruncate | None = Field(
        None,
        description="END cuts a long text's end, START its start; NONE: 400 for a text over the model's window "
        "(unless RERANK_AUTO_TRUNCATE); absent: END, as Cohere.",
    )
    output_dimension: int | None = Field(
        None, ge=1, description="Keep the first n dimensions, then re-normalize; at most the model's size."
    )


class CohereEmbeddings(BaseModel):
    """Vectors by type; only float is served."""

    model_config = ConfigDict(populate_by_name=True)

    float_: list[list[float]] = Field(alias="float", description="One vector per text, in input order.")


class CohereApiVersion(BaseModel):
    """Which Cohere API version the answer follows."""

    version: str = Field("2", description="Always 2.")


class CohereBilledUnits(BaseModel):
    """Cohere's billing counters for embed."""

    input_tokens: int = Field(description="Tokens of every text as embedded.")


class CohereEmbedMeta(BaseModel):
    """Cohere's `meta` block of an embed answer."""

    api_version: CohereApiVersion = Field(default_factory=CohereApiVersion, description="Always version 2.")
    billed_units: CohereBilledUnits = Field(description="What this request would count as on Cohere.")
    warnings: list[str] | None = Field(None, description="Texts cut to the model's window, when any.")


class CohereEmbedResponse(BaseModel):
    """Cohere v2 embed answer, as `ClientV2.embed` parses it (EmbedByTypeResponse)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5b0c6f1e2d7a4e3f9a8b7c6d5e4f3a2b",
                    "response_type": "embeddings_by_type",
                    "embeddings": {"float": [[0.021, -0.043, 0.118]]},
                    "texts": ["What is Deep Learning?"],
                    "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 8}},
                }
            ]
        }
    )

    id: str = Field(description="The request id (also the X-Request-ID header and the log line's request_id).")
    response_type: Literal["embeddings_by_type"] = Field("embeddings_by_type", description="Always by type.")
    embeddings: CohereEmbeddings = Field(description="The vectors, under `float`.")
    texts: list[str] = Field(description="The texts embedded, as sent.")
    meta: CohereEmbedMeta = Field(description="Billing counters and warnings.")
