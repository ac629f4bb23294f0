"""JSONL request log: one whole line per request, rotated by size."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

from pydantic import BaseModel, Field


class RequestLogEntry(BaseModel):
    """One line of the request log."""

    time: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    """When the response was sent, ISO 8601 UTC."""
    request_id: str
    """The X-Request-ID echoed to the client."""
    method: str
    """HTTP method."""
    route: str
    """Request path."""
    status: int
    """HTTP status sent (499: the client went away first)."""
    documents: int = 0
    """Documents in the request (all groups of a batch)."""
    chars: int = 0
    """Characters of query and documents."""
    latency_ms: float
    """Time from request to response."""
    model: str | None = None
    """Served model id."""
    revision: str | None = None
    """Served revision."""
    query: str | None = None
    """Query text, only with RERANK_LOG_TEXT=true."""
    document_texts: list[str] | None = None
    """Document texts, only with RERANK_LOG_TEXT=true."""


class RequestLog:
    """Appends entries as JSON lines; the handler's lock keeps concurrent lines whole."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # A private logger, not propagated, so request lines never mix with diagnostic logging.
        self._logger = logging.Logger(f"rerank_sidecar.requests.{id(self)}", level=logging.INFO)
        self._logger.propagate = False
        self._handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(self._handler)

    def write(self, entry: RequestLogEntry) -> None:
        # json.dumps, not model_dump_json: pydantic refuses to serialize lone surrogates, and a log
        # line must never be what fails a response. ASCII-only lines (non-ASCII text as \uXXXX escapes)
        # because RotatingFileHandler sizes a line in characters: with multi-byte characters the
        # files would outgrow RERANK_LOG_MAX_BYTES.
        fields = entry.model_dump(mode="json", exclude_none=True)
        self._logger.info(json.dumps(fields, ensure_ascii=True, separators=(",", ":")))

    def close(self) -> None:
        self._handler.flush()
        self._handler.close()
