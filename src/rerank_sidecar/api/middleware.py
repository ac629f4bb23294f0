"""Pure ASGI middleware: request ids and dialects, body size limit, and one log line + metrics per request."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import Metrics
from ..requestlog import RequestLog
from .dialect import decide_dialect, speaking
from .errors import error_response, internal_error_response
from .request_notes import write_log_line

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# A request id from the client is kept only when it is this short and printable.
_MAX_REQUEST_ID = 128


def _header(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.decode("latin-1").lower() == name:
            return value.decode("latin-1")
    return None


def _request_id(scope: Scope) -> str:
    given = _header(scope, REQUEST_ID_HEADER)
    if given and len(given) <= _MAX_REQUEST_ID and given.isprintable():
        return given
    return uuid.uuid4().hex


class BodyLimitMiddleware:
    """Answers 413 to bodies over `max_bytes`, declared or streamed, before any route parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = error_response(
            413, "payload_too_large", f"request body exceeds {self.max_bytes} bytes (RERANK_MAX_BODY_BYTES)"
        )
        declared = _header(scope, "content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            # The whole body first, then the real channel, so a route can still see a disconnect.
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class RequestContextMiddleware:
    """Gives each request an id and its dialect before any layer answers it, echoes the id, and writes its log
    line and metrics when it ends."""

    def __init__(self, app: ASGIApp, request_log: RequestLog, metrics: Metrics, routes: Iterable[str]) -> None:
        self.app = app
        self.request_log = request_log
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 499  # stays 499 if no response start is ever sent: the client went away first
        started_response = False
        logged = False

        def finish() -> None:
            nonlocal logged
            if not logged:
                logged = True
                self._record(scope, request_id, status, time.perf_counter() - started)

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status, started_response = message["status"], True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finish()  # before the last byte leaves, so a client that has its answer also has the log line
            await send(message)

        try:
            dialect, receive = await decide_dialect(scope, receive)
            with speaking(dialect):
                try:
                    await self.app(scope, receive, send_with_id)
                except Exception as exc:
                    # A bug. Answered here rather than by Starlette's outermost ServerErrorMiddleware, whose
                    # 500 would bypass this middleware: no request id header, and a log line saying 499.
                    if started_response:
                        raise
                    log.exception("unhandled error in request %s (%s %s)", request_id, scope["method"],
                                  scope["path"])
                    await internal_error_response(exc, request_id)(scope, receive, send_with_id)
        finally:
            finish()

    def _record(self, scope: Scope, request_id: str, status: int, elapsed: float) -> None:
        route = scope["path"] if scope["path"] in self.routes else "other"
        self.metrics.requests.labels(route=route, status=str(status)).inc()
        self.metrics.latency.labels(route=route).observe(elapsed)
        write_log_line(self.request_log, scope, request_id, status, elapsed)
