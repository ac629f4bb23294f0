"""Python clients of the sidecar (sync and async, one implementation: rerank and embed), their replies, and the
positional fallback."""

from .core import AsyncSidecarClient, CompatVersion, Fallback, SidecarClient, retry_after_s, sidecar_url
from .fallback import POSITIONAL_MODEL_ID, positional_scores
from .replies import (
    CompatRerankReply,
    EmbedReply,
    RerankBatchReply,
    RerankReply,
    RetryPolicy,
    SidecarError,
    SidecarHTTPError,
    SidecarUnreachable,
)

__all__ = [
    "POSITIONAL_MODEL_ID",
    "AsyncSidecarClient",
    "CompatRerankReply",
    "CompatVersion",
    "EmbedReply",
    "Fallback",
    "RerankBatchReply",
    "RerankReply",
    "RetryPolicy",
    "SidecarClient",
    "SidecarError",
    "SidecarHTTPError",
    "SidecarUnreachable",
    "positional_scores",
    "retry_after_s",
    "sidecar_url",
]
