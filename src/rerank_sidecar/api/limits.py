"""Input limits every rerank route enforces: 422s naming the field and the limit."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import Settings
from .errors import ApiError


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
        if len(document) > settings.max_document_chars:
            raise ApiError(
                422, "validation_error",
                f"{field}.{index}: {len(document)} characters exceeds the limit of "
                f"{settings.max_document_chars} (RERANK_MAX_DOCUMENT_CHARS)",
            )
        check_unicode(f"{field}.{index}", document)


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


def check_instruction(settings: Settings, instruction: str | None) -> None:
    if instruction is not None and len(instruction) > settings.max_query_chars:
        raise ApiError(
            422, "validation_error",
            f"instruction: {len(instruction)} characters exceeds the limit of {settings.max_query_chars} "
            "(RERANK_MAX_QUERY_CHARS)",
        )
    if instruction is not None:
        check_unicode("instruction", instruction)
