"""Request and response models of OpenAI's embeddings contract, `POST /v1/embeddings`.

They follow what the `openai` SDK sends and parses (`client.embeddings.create`), so the SDK, LiteLLM
(`openai/<name>` with `api_base`) and LangChain's `OpenAIEmbeddings` work unchanged. The SDK asks
for `encoding_format: "base64"` by default and decodes little-endian float32. Errors are OpenAI's
`{"error": {"message", "type", "param", "code"}}`. Pydantic only: the Python client imports it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EncodingFormat = Literal["float", "base64"]
InputType = Literal["query", "document"]


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI's POST /v1/embeddings: one text or a list of texts."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "builtin:all-MiniLM-L6-v2",
                    "input": ["Deep Learning is a branch of machine learning.", "Cheese is made from milk."],
                    "encoding_format": "float",
                }
            ]
        }
    )

    input: str | list[str] = Field(
        description="A text or a list of texts, each non-empty; at most RERANK_MAX_EMBED_INPUTS. Token ids are "
        "not accepted (LangChain's OpenAIEmbeddings needs check_embedding_ctx_length=False)."
    )
    model: str | None = Field(
        None, description="A name or alias from /v1/models; empty: the default model. It must embed."
    )
    encoding_format: EncodingFormat = Field(
        "float", description="float: lists of numbers; base64: each vector as base64 of little-endian float32."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Keep the first n dimensions, then re-normalize (Matryoshka); at most the model's size."
    )
    user: str | None = Field(None, description="Accepted and ignored.")
    input_type: InputType | None = Field(
        None,
        description="Sidecar extension (Voyage's name): query or document picks the model's prompt of that name "
        "when it has one (Qwen3-Embedding's instruction for queries); absent: the model's default prompt.",
    )

    @field_validator("input", mode="before")
    @classmethod
    def _text_not_token_ids(cls, value: Any) -> Any:
        if isinstance(value, list) and value and all(isinstance(item, (int, list)) for item in value):
            raise ValueError(
                "token ids are not accepted, send the texts (LangChain's OpenAIEmbeddings sends token ids unless "
                "check_embedding_ctx_length=False)"
            )
        return value

    @property
    def texts(self) -> list[str]:
        """The input as a list, in order."""
        return [self.input] if isinstance(self.input, str) else self.input


class OpenAIEmbedding(BaseModel):
    """One vector in `data`, in input order."""

    object: Literal["embedding"] = Field("embedding", description="Always embedding.")
    index: int = Field(description="Position of the text in `input`.")
    embedding: list[float] | str = Field(description="The vector, or its base64 with encoding_format base64.")


class OpenAIUsage(BaseModel):
    """Tokens the model read."""

    prompt_tokens: int = Field(description="Tokens of every input as embedded (prompt and special tokens included).")
    total_tokens: int = Field(description="Same as prompt_tokens: embedding produces no tokens.")


class OpenAIEmbeddingResponse(BaseModel):
    """OpenAI's embeddings answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.021, -0.043, 0.118]}],
                    "model": "builtin:all-MiniLM-L6-v2",
                    "usage": {"prompt_tokens": 12, "total_tokens": 12},
                }
            ]
        }
    )

    object: Literal["list"] = Field("list", description="Always list.")
    data: list[OpenAIEmbedding] = Field(description="One vector per input, in input order.")
    model: str = Field(description="Served model id.")
    usage: OpenAIUsage = Field(description="Tokens read.")


class OpenAIErrorBody(BaseModel):
    """The error itself, as the `openai` SDK reads it (APIError.message, type, param, code)."""

    message: str = Field(description="What was wrong, naming the field and the limit.")
    type: str = Field(description="The sidecar's error kind, e.g. validation_error, model_cannot_embed, queue_full.")
    param: str | None = Field(None, description="The field at fault, e.g. input.2, dimensions, model; null if none.")
    code: Any = Field(None, description="Always null.")


class OpenAIErrorResponse(BaseModel):
    """Every error of /v1/embeddings."""

    error: OpenAIErrorBody = Field(description="What went wrong.")

