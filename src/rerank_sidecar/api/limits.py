"""Input limits every rerank and embedding route enforces: 4xx naming the field and the limit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..config import Settings
from .errors import ApiError

if TYPE_CHECKING:
    from .scoring import ScoringRequest


def check_scoring_request(settings: Settings, scoring: ScoringRequest) -> None:
    """Every limit on a scoring request: each job's text and sizes, the options, then all documents together."""
    for job, names in zip(scoring.jobs, scoring.fields, strict=True):
        check_limits(settings, job.query, job.documents, names.documents, names.query)
        check_instruction(settings, job.instruction)
        check_chunk_cap(settings, job.max_chunks)
    total = sum(len(job.documents) for job in scoring.jobs)
    if total > settings.max_documents:
        raise ApiError(
            422, "validation_error",
            f"{scoring.all_documents_field}: {total} documents in all exceeds the limit of {settings.max_documents} "
            "(RERANK_MAX_DOCUMENTS)",
        )


def check_limits(
    settings: Settings, query: str, documents: Sequence[str], field: str = "documents", query_field: str = "query"
) -> None:
    """422 naming the field and the limit when a request is over one, or holds text that is not Unicode."""
    if len(query) > settings.max_query_chars:
        raise ApiError(
            422, "validation_error",
            f"{query_field}: {len(query)} characters exceeds the limit of {settings.max_query_chars} "
            "(RERANK_MAX_QUERY_CHARS)",
        )
    check_unicode(query_field, query)
    if len(documents) > settings.max_documents:
        raise ApiError(
            422, "validation_error",
            f"{field}: {len(documents)} documents exceeds the limit of {settings.max_documents} (RERANK_MAX_DOCUMENTS)",
        )
    for index, document in enumerate(documents):
        check_document(settings, f"{field}.{index}", document)


def check_document(settings: Settings, field: str, text: str) -> None:
    """422 for a document or text over RERANK_MAX_DOCUMENT_CHARS, or holding text that is not Unicode."""
    if len(text) > settings.max_document_chars:
        raise ApiError(
            422, "validation_error",
            f"{field}: {len(text)} characters exceeds the limit of {settings.max_document_chars} "
            "(RERANK_MAX_DOCUMENT_CHARS)",
            param=field,
        )
    check_unicode(field, text)


def check_embed_inputs(settings: Settings, texts: Sequence[str], field: str) -> None:
    """400 for no texts or an empty one (nothing to embed); 422 past RERANK_MAX_EMBED_INPUTS or a text's length."""
    if not texts:
        raise ApiError(400, "empty", f"{field}: send at least one text to embed", param=field)
    if len(texts) > settings.max_embed_inputs:
        raise ApiError(
            422, "validation_error",
            f"{field}: {len(texts)} texts exceeds the limit of {settings.max_embed_inputs} (RERANK_MAX_EMBED_INPUTS)",
            param=field,
        )
    for index, text in enumerate(texts):
        if not text:
            raise ApiError(
                400, "empty", f"{field}.{index}: an empty string has nothing to embed", param=f"{field}.{index}"
            )
        check_document(settings, f"{field}.{index}", text)


def check_unicode(field: str, text: str) -> None:
    """422 for a lone surrogate (JSON allows the escape "\\ud800"; no tokenizer can take it)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(
            422, "validation_error",
            f"{field}: character {exc.start} is a lone UTF-16 surrogate ({text[exc.start]!a}), not valid Unicode text",
        ) from None


def check_chunk_cap(settings: Settings, max_chunks: int | None) -> None:
    """422 for a chunk cap over RERANK_MAX_CHUNKS_PER_DOC (Cohere's `max_chunks_per_doc`, the one field that sets it)."""
    if max_chunks is not None and max_chunks > settings.max_chunks_per_doc:
        raise ApiError(
            422, "validation_error",
            f"max_chunks_per_doc: {max_chunks} exceeds the limit of {settings.max_chunks_per_doc} "
            "(RERANK_MAX_CHUNKS_PER_DOC)",
        )


def check_instruction(settings: Settings, instruction: str | None) -> None:
    if instruction is not None and len(instruction) > settings.max_query_chars:
        raise ApiError(
            422, "validation_error",
            f"instruction: {len(instruction)} characters exceeds the limit of {settings.max_query_chars} "
            "(RERANK_MAX_QUERY_CHARS)",
        )
    if instruction is not None:
        check_unicode("instruction", instruction)
