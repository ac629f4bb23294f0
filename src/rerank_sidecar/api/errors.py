"""One JSON error shape per dialect for every failure, framework-level ones included (dialect.py decides which)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine.errors import (
    CannotEmbed,
    CannotRerank,
    DeadlineExceeded,
    ModelUnavailable,
    QueueFull,
    RequestTooLarge,
    SchedulerStopped,
    UnknownModel,
)
from .dialect import Dialect, current_dialect

# Seconds a client should wait before retrying a model that failed to load.
MODEL_RETRY_AFTER_S = 30

# TEI's error_type for each of this sidecar's error types; statuses stay the sidecar's own.
_TEI_ERROR_TYPES = {
    "unauthorized": "Validation",
    "validation_error": "Validation",
    "payload_too_large": "Validation",
    "empty": "Empty",
    "input_too_long": "Validation",
    "model_cannot_embed": "Validation",
    "model_cannot_rerank": "Validation",
    "queue_full": "Overloaded",
    "deadline_exceeded": "Overloaded",
    "model_unavailable": "Unhealthy",
    "shutting_down": "Unhealthy",
}


class ApiError(Exception):
    """An error the routes raise on purpose; rendered by `error_response`."""

    def __init__(
        self, status: int, type_: str, message: str, headers: dict[str, str] | None = None, param: str | None = None
    ) -> None:
        """`param` is the field at fault, for the dialects whose errors name it apart (OpenAI's)."""
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers
        self.param = param


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


def error_response(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None, param: str | None = None
) -> JSONResponse:
    """The error in the request's dialect: `{"error": {"type", "message"}}`, TEI's `{"error", "error_type"}`, or
    OpenAI's `{"error": {"message", "type", "param", "code"}}` (the `openai` SDK reads all four; `code` is null,
    as on most of OpenAI's own errors)."""
    dialect = current_dialect()
    if dialect is Dialect.TEI:
        body: dict = {"error": message, "error_type": _TEI_ERROR_TYPES.get(type_, "Backend")}
    elif dialect is Dialect.OPENAI:
        body = {"error": {"message": message, "type": type_, "param": param, "code": None}}
    else:
        body = {"error": {"type": type_, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def internal_error_response(exc: Exception, request_id: str) -> JSONResponse:
    """The 500 for a bug: names the exception's type and the request id to find its traceback in the log."""
    return error_response(
        500, "internal_error",
        f"unexpected {type(exc).__name__}; the sidecar's log has the traceback under request id {request_id}",
    )


def _invalid_field(exc: RequestValidationError) -> str | None:
    """The first offending field, dotted (`input.2`), or None when the body itself is at fault."""
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in _DIALECT_TAGS and part != "body"]
        if location and error.get("type") != "json_invalid":
            return ".".join(location)
    return None


def _describe_validation(request: Request, exc: RequestValidationError) -> str:
    """'body.documents.2: Input should be a valid string; ...', naming each offending field."""
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and "json" not in content_type:
        # FastAPI parses a body as JSON only when the client says it is (a guard against CSRF).
        return f"body: send a JSON object with 'Content-Type: application/json' (got {content_type or 'none'!r})"
    parts = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in _DIALECT_TAGS]
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "parse error")
            parts.append(f"body: invalid JSON at character {location[-1] if len(location) > 1 else 0} ({reason})")
        else:
            parts.append(f"{'.'.join(location)}: {error.get('msg')}")
    return "; ".join(parts) or "invalid request"


# POST /rerank's body is tagged with its dialect (routes.RerankBody); a field's name leaves the tag out.
_DIALECT_TAGS = frozenset(dialect.value for dialect in Dialect)

_STATUS_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 401: "unauthorized"}


# The engine's refusals: status, error type, and the Retry-After to send (None: no header).
_ENGINE_ERRORS: dict[type[Exception], tuple[int, str, Callable[[Exception], str | None]]] = {
    CannotEmbed: (400, "model_cannot_embed", lambda _: None),
    CannotRerank: (400, "model_cannot_rerank", lambda _: None),
    ModelUnavailable: (503, "model_unavailable", lambda _: str(MODEL_RETRY_AFTER_S)),
    QueueFull: (503, "queue_full", lambda exc: str(exc.retry_after_s)),
    DeadlineExceeded: (503, "deadline_exceeded", lambda _: "1"),
    RequestTooLarge: (413, "payload_too_large", lambda _: None),
    SchedulerStopped: (503, "shutting_down", lambda _: "1"),
    UnknownModel: (400, "model_not_served", lambda _: None),
}


# The engine's refusals that are the `model` field's fault.
_MODEL_FAULTS = {UnknownModel: "model", CannotEmbed: "model", CannotRerank: "model"}


def _engine_error_handler(
    status: int, type_: str, retry_after: Callable[[Exception], str | None]
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        seconds = retry_after(exc)
        headers = {"Retry-After": seconds} if seconds is not None else None
        return error_response(status, type_, str(exc), headers, _MODEL_FAULTS.get(type(exc)))

    return handle


def install_error_handlers(app: FastAPI) -> None:
    """Maps every exception the app can raise to the request dialect's error shape and the right status.

    Anything else is a bug: RequestContextMiddleware answers it with `internal_error_response` from
    inside the middleware stack, so the 500 carries its request id and gets its log line; the
    handler for `Exception` here only catches what escapes that middleware.
    """

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message, exc.headers, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", _describe_validation(request, exc), param=_invalid_field(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    for engine_error, (status, type_, retry_after) in _ENGINE_ERRORS.items():
        app.add_exception_handler(engine_error, _engine_error_handler(status, type_, retry_after))

    @app.exception_handler(ClientDisconnected)
    async def _gone(_: Request, exc: ClientDisconnected) -> JSONResponse:
        return error_response(499, "client_disconnected", "the client closed the connection before the answer")

    @app.exception_handler(Exception)
    async def _escaped(request: Request, exc: Exception) -> JSONResponse:
        # Reached only when the request middleware itself fails; uvicorn then logs the traceback.
        return internal_error_response(exc, getattr(request.state, "request_id", "unknown"))
