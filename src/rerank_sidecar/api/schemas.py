"""Request and response models of the native HTTP contract."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or whitespace")
    return value


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
    raw_scores: bool = Field(False, description="Return raw model scores instead of [0, 1] relevance.")
    return_documents: bool = Field(False, description="Echo each document's text in `results`.")
    model: str | None = Field(None, description="Optional; must name the served model or one of its aliases.")

    _query_not_blank = field_validator("query")(_not_blank)


class RerankResult(BaseModel):
    """One document in `results`, best first."""

    index: int = Field(description="Position of the document in the request.")
    relevance_score: float = Field(description="Relevance in [0, 1] (raw score with raw_scores).")
    document: str | None = Field(None, description="The document text, with return_documents.")


class RerankResponse(BaseModel):
    """POST /rerank's answer."""

    model: str = Field(description="Served model id.")
    revision: str = Field(description="Served revision (commit sha or content tag).")
    scores: list[float] = Field(description="One score per document, in input order.")
    results: list[RerankResult] = Field(description="Documents best first, top_n applied.")
    truncated: list[int] = Field(description="Indices of documents part of whose text went unscored.")
    latency_ms: float = Field(description="Server-side time for this request.")


class HealthResponse(BaseModel):
    """GET /health: answers while the process is up; never loads the model."""

    status: Literal["idle", "loading", "ready", "error"] = Field(
        description="idle: not loaded yet; loading; ready; error (see `error`)."
    )
    model_loaded: bool = Field(description="Whether the model is in memory.")
    model: str = Field(description="Served (or configured, before loading) model id.")
    revision: str = Field(description="Resolved revision once loaded; the configured one before.")
    configured_revision: str = Field(description="RERANK_MODEL_REVISION as configured.")
    family: str | None = Field(None, description="cross-encoder, qwen3 or bi-encoder, once loaded.")
    backend: str | None = Field(None, description="Inference runtime, once loaded.")
    device: str | None = Field(None, description="Device the model runs on, once loaded.")
    dtype: str | None = Field(None, description="Weights' precision, once loaded.")
    scheduler: str = Field(description="batched or serial.")
    uptime_s: float = Field(description="Seconds since the process started serving.")
    queue_depth: int = Field(description="Pairs waiting to be scored.")
    pid: int = Field(description="Process id of the sidecar.")
    version: str = Field(description="rerank-sidecar version.")
    error: str | None = Field(None, description="Why the model could not load, with the fix.")


class WarmupResponse(BaseModel):
    """POST /warmup: the model is loaded and has run one forward pass."""

    status: Literal["ready"] = Field(description="Always ready on success.")
    model: str = Field(description="Served model id.")
    revision: str = Field(description="Resolved revision.")
    family: str = Field(description="Scorer family.")
    backend: str = Field(description="Inference runtime.")
    device: str = Field(description="Device.")
    already_loaded: bool = Field(description="True when an earlier call had loaded the model.")
    load_s: float = Field(description="Seconds the model load took.")
    warmup_s: float = Field(description="Seconds of this call's tiny forward pass.")


class ErrorBody(BaseModel):
    """The error itself."""

    type: str = Field(description="Machine-readable kind, e.g. validation_error, queue_full.")
    message: str = Field(description="What was wrong, naming the field and the limit.")


class ErrorResponse(BaseModel):
    """Every error response has this shape."""

    error: ErrorBody
