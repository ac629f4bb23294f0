"""One JSON error shape for every failure, framework-level ones included."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# Seconds a client should wait before retrying a model that failed to load.
MODEL_RETRY_AFTER_S = 30


class ApiError(Exception):
    """An error the routes raise on purpose; rendered as `{"error": {"type", "message"}}`."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.headers = headers


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


def internal_error_response(exc: Exception, request_id: str) -> JSONResponse:
    """The 500 for a bug: names the exception's type and the request id to find its traceback in the log."""
    return error_response(
        500, "internal_error",
        f"unexpected {type(exc).__name__}; the sidecar's log has the traceback under request id {request_id}",
    )


def _describe_validation(request: Request, exc: RequestValidationError) -> str:
    """'body.documents.2: Input should be a valid string; ...', naming each offending field."""
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and "json" not in content_type:
        # FastAPI parses a body as JSON only when the client says it is (a guard against CSRF).
        return f"body: send a JSON object with 'Content-Type: application/json' (got {content_type or 'none'!r})"
    parts = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":
            reason = error.get("ctx", {}).get("error", "parse error")
            parts.append(f"body: invalid JSON at character {location[-1] if len(location) > 1 else 0} ({reason})")
        else:
            parts.append(f"{'.'.join(location)}: {error.get('msg')}")
    return "; ".join(parts) or "invalid request"


_STATUS_TYPES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 401: "unauthorized"}


def install_error_handlers(app: FastAPI) -> None:
    """Maps every exception the app can raise to the one error shape and the right status.

    Anything else is a bug: RequestContextMiddleware answers it with `internal_error_response` from
    inside the middleware stack, so the 500 carries its request id and gets its log line; the
    handler for `Exception` here only catches what escapes that middleware.
    """
    # Imported here, not at the top, so that modules needing only `error_response` (the API-key
    # middleware, which the CLI imports to refuse an unsafe bind) do not pull in torch.
    from ..engine.engine import DeadlineExceeded, ModelUnavailable
    from ..engine.scheduler import QueueFull, RequestTooLarge, SchedulerStopped

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_error", _describe_validation(request, exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(exc.status_code, "http_error")
        return error_response(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(ModelUnavailable)
    async def _model(_: Request, exc: ModelUnavailable) -> JSONResponse:
        return error_response(503, "model_unavailable", str(exc), {"Retry-After": str(MODEL_RETRY_AFTER_S)})

    @app.exception_handler(QueueFull)
    async def _queue_full(_: Request, exc: QueueFull) -> JSONResponse:
        return error_response(503, "queue_full", str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(_: Request, exc: DeadlineExceeded) -> JSONResponse:
        return error_response(503, "deadline_exceeded", str(exc), {"Retry-After": "1"})

    @app.exception_handler(RequestTooLarge)
    async def _too_large(_: Request, exc: RequestTooLarge) -> JSONResponse:
        return error_response(413, "payload_too_large", str(exc))

    @app.exception_handler(SchedulerStopped)
    async def _stopped(_: Request, exc: SchedulerStopped) -> JSONResponse:
        return error_response(503, "shutting_down", str(exc), {"Retry-After": "1"})

    @app.exception_handler(ClientDisconnected)
    async def _gone(_: Request, exc: ClientDisconnected) -> JSONResponse:
        return error_response(499, "client_disconnected", "the client closed the connection before the answer")

    @app.exception_handler(Exception)
    async def _escaped(request: Request, exc: Exception) -> JSONResponse:
        # Reached only when the request middleware itself fails; uvicorn then logs the traceback.
        return internal_error_response(exc, getattr(request.state, "request_id", "unknown"))
