"""OpenAI's embeddings contract, `POST /v1/embeddings`, so the `openai` SDK, LiteLLM and LangChain embed here."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request

from .embedding import EmbeddingRequest, embed
from .openai_schemas import (
    EncodingFormat,
    OpenAIEmbedding,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIErrorResponse,
    OpenAIUsage,
)
from .schemas import ERROR_RESPONSES

router = APIRouter(tags=["OpenAI compatible"])

# The native examples fit OpenAI's shape: its `param` and `code` are null there, and OpenAPI leaves nulls out.
_RESPONSES = {status: {**response, "model": OpenAIErrorResponse} for status, response in ERROR_RESPONSES.items()}


@router.post(
    "/v1/embeddings",
    response_model=OpenAIEmbeddingResponse,
    responses=_RESPONSES,
    response_description="One vector per input, in input order, with the tokens read.",
)
async def embeddings(body: OpenAIEmbeddingRequest, request: Request) -> OpenAIEmbeddingResponse:
    """One vector per input, in input order; an input over the model's window is a 400 unless RERANK_AUTO_TRUNCATE."""
    outcome = await embed(request, EmbeddingRequest(
        model=body.model,
        texts=body.texts,
        texts_field="input",
        prompt_name=body.input_type,
        prompt_if_known=True,
        prompt_field="input_type",
        dimensions=body.dimensions,
    ))
    tokens = sum(outcome.tokens)
    return OpenAIEmbeddingResponse(
        data=[
            OpenAIEmbedding(index=index, embedding=_encoded(vector, body.encoding_format))
            for index, vector in enumerate(outcome.vectors)
        ],
        model=outcome.info.model,
        usage=OpenAIUsage(prompt_tokens=tokens, total_tokens=tokens),
    )


def _encoded(vector: np.ndarray, encoding_format: EncodingFormat) -> list[float] | str:
    """The vector as numbers, or as base64 of its little-endian float32 bytes (what the `openai` SDK decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()
