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
    """Records the request's size (and, only when enabled, its text) for the request log."""
    state = request.state
    state.documents = getattr(state, "documents", 0) + len(documents)
    state.chars = getattr(state, "chars", 0) + len(query) + sum(len(document) for document in documents)
    if settings.log_text:
        state.query_text = query if not hasattr(state, "query_text") else f"{state.query_text}\n{query}"
        state.document_texts = [*getattr(state, "document_texts", []), *documents]


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
