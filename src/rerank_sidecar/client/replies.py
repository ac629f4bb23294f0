"""What the clients return and raise: typed replies (with the fallback flag), errors, and the retry policy."""

from __future__ import annotations

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ..api.compat_schemas import CompatRerankResponse
from ..api.openai_schemas import OpenAIEmbeddingResponse
from ..api.schemas import RerankBatchResponse, RerankResponse


class SidecarError(RuntimeError):
    """Any failure of a sidecar call."""


class SidecarUnreachable(SidecarError):
    """No HTTP answer came back (refused, reset, timed out), retries included."""

    def __init__(self, url: str, cause: httpx.TransportError) -> None:
        super().__init__(f"no answer from the rerank sidecar at {url}: {type(cause).__name__}: {cause}")
        self.url = url
        self.cause = cause


class SidecarHTTPError(SidecarError):
    """The sidecar answered with an error status; `type` and `message` come from its error body."""

    def __init__(self, status: int, type_: str, message: str, retry_after_s: float | None) -> None:
        super().__init__(f"HTTP {status} {type_}: {message}")
        self.status = status
        self.type = type_
        self.message = message
        self.retry_after_s = retry_after_s


class RetryPolicy(BaseModel):
    """How often and how patiently a client retries connection errors and 503s."""

    model_config = ConfigDict(frozen=True)

    attempts: int = Field(4, ge=1, description="Tries in all, the first included; 1 disables retries.")
    initial_backoff_s: float = Field(0.2, ge=0, description="First backoff when the server names no Retry-After.")
    max_backoff_s: float = Field(5.0, ge=0, description="Longest exponential backoff between two tries.")
    max_retry_after_s: float = Field(30.0, ge=0, description="Longest Retry-After honoured; past it, fail at once.")


class RerankReply(RerankResponse):
    """POST /rerank's answer as the client returns it, or the positional fallback."""

    fallback: bool = Field(False, description="True when the sidecar was unreachable and these are positional scores.")


class RerankBatchReply(RerankBatchResponse):
    """POST /rerank/batch's answer as the client returns it, or the positional fallback."""

    fallback: bool = Field(False, description="True when the sidecar was unreachable and these are positional scores.")


class CompatRerankReply(CompatRerankResponse):
    """POST /v1/rerank or /v2/rerank's answer as the client returns it, or the positional fallback."""

    fallback: bool = Field(False, description="True when the sidecar was unreachable and these are positional scores.")


class EmbedReply(BaseModel):
    """The vectors of an embed call (POST /v1/embeddings), in input order."""

    vectors: list[list[float]] = Field(description="One vector per text, in input order.")
    model: str = Field(description="Served model id.")
    tokens: int = Field(description="Tokens the model read, every text's prompt and special tokens included.")

    @classmethod
    def from_response(cls, response: OpenAIEmbeddingResponse) -> EmbedReply:
        """The reply of a float-encoded /v1/embeddings answer."""
        vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
        if any(isinstance(vector, str) for vector in vectors):
            raise ValueError("expected float vectors, got base64 (the client asks for encoding_format float)")
        return cls(vectors=vectors, model=response.model, tokens=response.usage.prompt_tokens)
