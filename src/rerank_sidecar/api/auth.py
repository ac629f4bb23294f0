"""API-key authentication (pure ASGI), and the rule that a sidecar reachable from other hosts needs a key."""

from __future__ import annotations

import hmac
import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

from ..config import Settings
from .errors import error_response

# Routes a supervisor must reach without the key: liveness says nothing about the data served.
PUBLIC_PATHS = frozenset({"/health"})
_CHALLENGE = 'Bearer realm="rerank-sidecar"'


def _authorization(scope: Scope) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            return value
    return None


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer <key>` on every route but /health when a key is configured."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self._key = api_key.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._key or scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        header = _authorization(scope)
        if header is None:
            refusal = error_response(
                401, "unauthorized",
                "missing API key: send 'Authorization: Bearer <key>' (this sidecar sets RERANK_API_KEY)",
                {"WWW-Authenticate": _CHALLENGE},
            )
            await refusal(scope, receive, send)
            return
        scheme, _, token = header.strip().partition(b" ")
        # compare_digest takes as long for a near miss as for a far one, so timing leaks nothing of the key.
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._key):
            refusal = error_response(
                401, "unauthorized",
                "invalid API key in the Authorization header (expected 'Bearer <RERANK_API_KEY>')",
                {"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; any other name or address counts as reachable from outside."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_refusal(settings: Settings) -> str | None:
    """Why the sidecar must not start as configured (bound beyond loopback without a key), or None."""
    if settings.api_key or settings.allow_unauthenticated or is_loopback(settings.sidecar_host):
        return None
    return (
        f"refusing to listen on {settings.sidecar_host!r} without an API key: anyone who can reach that "
        "address could use the model. Set RERANK_API_KEY (clients then send 'Authorization: Bearer <key>'), "
        "bind to 127.0.0.1, or set RERANK_ALLOW_UNAUTHENTICATED=true to accept the exposure."
    )


class UnsafeExposure(RuntimeError):
    """create_app was asked for a non-loopback app without an API key; the message names the fixes."""
