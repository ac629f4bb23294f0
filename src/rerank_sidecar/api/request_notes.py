"""What a request's log line says: the routes note sizes and the model, the middleware writes the line from them.

Notes live in the ASGI scope's `state` (what `request.state` reads and writes), so the middleware
that outlives the route finds them, also for a request that failed half-way.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import Request
from starlette.types import Scope

from ..config import Settings
from ..requestlog import RequestLog, RequestLogEntry


def note_request(request: Request, query: str, documents: Sequence[str], settings: Settings) -> None:
    """Records a rerank job's size (and, only when enabled, its text) for the request log."""
    note_texts(request, documents, settings)
    state = request.state
    state.chars += len(query)
    if settings.log_text:
        state.query_text = query if not hasattr(state, "query_text") else f"{state.query_text}\n{query}"


def note_texts(request: Request, texts: Sequence[str], settings: Settings) -> None:
    """Records texts (a rerank job's documents, an embedding request's inputs) as the log line's `documents`."""
    state = request.state
    state.documents = getattr(state, "documents", 0) + len(texts)
    state.chars = getattr(state, "chars", 0) + sum(len(text) for text in texts)
    if settings.log_text:
        state.document_texts = [*getattr(state, "document_texts", []), *texts]


def note_model(request: Request, model: str, revision: str) -> None:
    """Records which model answered the request."""
    request.state.model, request.state.revision = model, revision


def write_log_line(request_log: RequestLog, scope: Scope, request_id: str, status: int, elapsed_s: float) -> None:
    """The request's one JSONL line, from the notes the routes left in its state."""
    state = scope.get("state", {})
    request_log.write(
        RequestLogEntry(
            request_id=request_id,
            method=scope["method"],
            route=scope["path"],
            status=status,
            documents=state.get("documents", 0),
            chars=state.get("chars", 0),
            latency_ms=round(elapsed_s * 1000, 3),
            model=state.get("model"),
            revision=state.get("revision"),
            query=state.get("query_text"),
            document_texts=state.get("document_texts"),
        )
    )
