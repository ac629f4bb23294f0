"""The Python clients of the sidecar, sync and async, written once: typed results, timeouts, retries, positional fallback.

Both clients retry connection errors and 503 answers with exponential backoff, waiting at least as
long as the server's `Retry-After` says. A `Retry-After` longer than `RetryPolicy.max_retry_after_s`
ends the retries at once: waiting less would not honour it, and waiting that long stalls the caller.
With `fallback="positional"`, a rerank that cannot reach the sidecar returns positional scores
(1 / (1 + rank), input order kept) flagged `fallback=True` instead of raising; an answer the sidecar
gives, an error included, is never replaced.
"""

from __future__ import annotations

import email.utils
import time
from urllib.parse import urlencode
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import httpx
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from ..api.compat_schemas import CompatRerankRequest
from ..api.openai_schemas import InputType, OpenAIEmbeddingRequest, OpenAIEmbeddingResponse
from ..api.schemas import (
    ErrorResponse,
    HealthResponse,
    RerankBatchGroup,
    RerankBatchRequest,
    RerankRequest,
    WarmupResponse,
)
from ..config import Settings
from .fallback import positional_batch_reply, positional_compat_reply, positional_reply
from .replies import (
    CompatRerankReply,
    EmbedReply,
    RerankBatchReply,
    RerankReply,
    RetryPolicy,
    SidecarHTTPError,
    SidecarUnreachable,
)

Fallback = Literal["none", "positional"]
CompatVersion = Literal["v1", "v2"]
Reply = TypeVar("Reply")
Returns: TypeAlias = Reply | Awaitable[Reply]
"""A route's reply: as it is from SidecarClient, to be awaited from AsyncSidecarClient."""

# Loopback addresses to connect to when the server binds every interface.
_WILDCARD_HOSTS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}

# Transport failures that mean "no connection": safe to retry, since every route is idempotent.
# A read timeout is not among them: the server is up but slow, and a retry would add to its load.
_CONNECTION_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.WriteError,
                      httpx.RemoteProtocolError)


def sidecar_url(settings: Settings) -> str:
    """The URL a local client reaches the configured sidecar at."""
    host = _WILDCARD_HOSTS.get(settings.sidecar_host, settings.sidecar_host)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.sidecar_port}"


def retry_after_s(header: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for (delta-seconds or an HTTP date); None without one."""
    if header is None:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_retryable(error: BaseException) -> bool:
    if isinstance(error, SidecarHTTPError):
        return error.status == 503
    return isinstance(error, _CONNECTION_ERRORS)


class _WaitRetryAfter(wait_base):
    """The server's Retry-After when it sent one, else the backoff strategy."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(error, SidecarHTTPError) and error.retry_after_s is not None:
            return error.retry_after_s
        return self.backoff(retry_state)


class _StopOnLongRetryAfter(stop_base):
    """Stops when the server asks for a longer wait than the caller accepts."""

    def __init__(self, max_retry_after_s: float) -> None:
        self.max_retry_after_s = max_retry_after_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return (
            isinstance(error, SidecarHTTPError)
            and error.retry_after_s is not None
            and error.retry_after_s > self.max_retry_after_s
        )


def _retry_options(policy: RetryPolicy) -> dict:
    """tenacity options shared by the sync and the async client."""
    return {
        "retry": retry_if_exception(_is_retryable),
        "stop": stop_after_attempt(policy.attempts) | _StopOnLongRetryAfter(policy.max_retry_after_s),
        "wait": _WaitRetryAfter(
            wait_exponential_jitter(
                multiplier=policy.initial_backoff_s, max=policy.max_backoff_s, jitter=policy.initial_backoff_s
            )
        ),
        "reraise": True,
    }


def _checked(response: httpx.Response) -> httpx.Response:
    """The response itself on success; a SidecarHTTPError carrying the server's error body otherwise."""
    if response.is_success:
        return response
    try:
        error = ErrorResponse.model_validate_json(response.content).error
        kind, message = error.type, error.message
    except ValidationError:
        kind, message = "http_error", response.text[:500] or response.reason_phrase
    raise SidecarHTTPError(response.status_code, kind, message, retry_after_s(response.headers.get("retry-after")))


@dataclass(frozen=True, slots=True)
class _Call(Generic[Reply]):
    """One route call as both clients make it: what to send, how to read the answer, what to fall back on."""

    method: str
    """HTTP method."""
    path: str
    """Route path."""
    body: dict[str, Any] | None
    """JSON body, or None."""
    parse: Callable[[bytes], Reply]
    """Turns a 2xx body into the typed reply."""
    positional: Callable[[], Reply] | None = None
    """The positional fallback reply; None for routes that have none (health, warmup)."""


def _health_call() -> _Call[HealthResponse]:
    return _Call("GET", "/health", None, HealthResponse.model_validate_json)


def _warmup_call(model: str | None) -> _Call[WarmupResponse]:
    path = f"/warmup?{urlencode({'model': model})}" if model else "/warmup"
    return _Call("POST", path, None, WarmupResponse.model_validate_json)


def _rerank_call(request: RerankRequest) -> _Call[RerankReply]:
    body = request.model_dump(exclude_none=True)
    return _Call("POST", "/rerank", body, RerankReply.model_validate_json, lambda: positional_reply(request))


def _batch_call(request: RerankBatchRequest) -> _Call[RerankBatchReply]:
    body = request.model_dump(exclude_none=True)
    return _Call("POST", "/rerank/batch", body, RerankBatchReply.model_validate_json,
                 lambda: positional_batch_reply(request))


def _compat_call(request: CompatRerankRequest, version: CompatVersion) -> _Call[CompatRerankReply]:
    body = request.model_dump(exclude_none=True)
    return _Call("POST", f"/{version}/rerank", body, CompatRerankReply.model_validate_json,
                 lambda: positional_compat_reply(request))


def _embed_call(request: OpenAIEmbeddingRequest) -> _Call[EmbedReply]:
    body = request.model_dump(exclude_none=True)
    return _Call("POST", "/v1/embeddings", body,
                 lambda content: EmbedReply.from_response(OpenAIEmbeddingResponse.model_validate_json(content)))


def _batch_request(groups: Sequence[tuple[str, Sequence[str]]], **options: Any) -> RerankBatchRequest:
    return RerankBatchRequest(
        groups=[RerankBatchGroup(query=query, documents=list(documents)) for query, documents in groups], **options
    )


def _client_options(base_url: str | None, api_key: str | None, timeout_s: float, connect_timeout_s: float) -> dict:
    """httpx options shared by both clients; an unset URL or key comes from Settings."""
    settings = Settings() if base_url is None or api_key is None else None
    url = base_url if base_url is not None else sidecar_url(settings)
    key = api_key if api_key is not None else settings.api_key
    return {
        "base_url": url,
        "timeout": httpx.Timeout(timeout_s, connect=connect_timeout_s),
        "headers": {"Authorization": f"Bearer {key}"} if key else {},
    }


class _Routes:
    """Every route both clients call, written once: each builds a `_Call` and hands it to `_run`.

    SidecarClient's `_run` sends it and returns the reply; AsyncSidecarClient's is a coroutine, so
    there each method returns an awaitable of the same reply.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 2.0,
        retry: RetryPolicy = RetryPolicy(),
        fallback: Fallback = "none",
        model: str | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Unset `base_url` and `api_key` come from Settings; `model` is the model calls pick unless they name one
        (None: the sidecar's default); `transport` replaces the network (tests)."""
        self.retry = retry
        self.fallback = fallback
        self.model = model
        self._http = self._http_client(transport, _client_options(base_url, api_key, timeout_s, connect_timeout_s))

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    @staticmethod
    def _http_client(transport: Any, options: dict[str, Any]) -> httpx.Client | httpx.AsyncClient:
        raise NotImplementedError

    def _run(self, call: _Call[Reply]) -> Returns[Reply]:
        raise NotImplementedError

    def _fallback_for(self, call: _Call[Reply], error: SidecarUnreachable) -> Reply:
        """The positional reply when the caller asked for one and the route has one; the error otherwise."""
        if self.fallback == "positional" and call.positional is not None:
            return call.positional()
        raise error

    def health(self) -> Returns[HealthResponse]:
        """GET /health: liveness and model state."""
        return self._run(_health_call())

    def warmup(self, model: str | None = None) -> Returns[WarmupResponse]:
        """POST /warmup: loads the model (this client's, or the sidecar's default) if needed and runs one forward pass."""
        return self._run(_warmup_call(model or self.model))

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int | None = None,
        instruction: str | None = None,
        raw_scores: bool = False,
        return_documents: bool = False,
        model: str | None = None,
    ) -> Returns[RerankReply]:
        """POST /rerank: `scores` in input order, `results` best first."""
        request = RerankRequest(query=query, documents=list(documents), top_n=top_n, instruction=instruction,
                                raw_scores=raw_scores, return_documents=return_documents, model=model or self.model)
        return self.rerank_request(request)

    def rerank_request(self, request: RerankRequest) -> Returns[RerankReply]:
        """POST /rerank with a ready request."""
        return self._run(_rerank_call(request))

    def rerank_batch(self, groups: Sequence[tuple[str, Sequence[str]]], **options: Any) -> Returns[RerankBatchReply]:
        """POST /rerank/batch with (query, documents) groups; options are RerankBatchRequest's."""
        return self.rerank_batch_request(_batch_request(groups, **{"model": self.model, **options}))

    def rerank_batch_request(self, request: RerankBatchRequest) -> Returns[RerankBatchReply]:
        """POST /rerank/batch with a ready request."""
        return self._run(_batch_call(request))

    def compat_rerank(self, request: CompatRerankRequest, version: CompatVersion = "v2") -> Returns[CompatRerankReply]:
        """POST /v1/rerank or /v2/rerank (Cohere/Jina shape); a request without `model` gets this client's."""
        if request.model is None and self.model is not None:
            request = request.model_copy(update={"model": self.model})
        return self._run(_compat_call(request, version))


    def embed(
        self,
        texts: Sequence[str],
        model: str | None = None,
        input_type: InputType | None = None,
        dimensions: int | None = None,
    ) -> Returns[EmbedReply]:
        """POST /v1/embeddings: one vector per text, in order; `input_type` picks the model's query or document
        prompt where it has one; `dimensions` keeps the first n, re-normalized. No positional fallback."""
        request = OpenAIEmbeddingRequest(input=list(texts), model=model or self.model, encoding_format="float",
                                         input_type=input_type, dimensions=dimensions)
        return self._run(_embed_call(request))


class SidecarClient(_Routes):
    """Blocking client: `with SidecarClient() as client: client.rerank(query, documents)`.

    Unset `base_url` and `api_key` come from Settings (RERANK_SIDECAR_HOST/PORT, RERANK_API_KEY).
    """

    @staticmethod
    def _http_client(transport: httpx.BaseTransport | None, options: dict[str, Any]) -> httpx.Client:
        return httpx.Client(transport=transport, **options)

    def __enter__(self) -> SidecarClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: _Call[Reply]) -> Reply:
        def attempt() -> httpx.Response:
            return _checked(self._http.request(call.method, call.path, json=call.body))

        try:
            response = Retrying(**_retry_options(self.retry))(attempt)
        except httpx.TransportError as error:
            return self._fallback_for(call, SidecarUnreachable(self.base_url, error))
        return call.parse(response.content)


class AsyncSidecarClient(_Routes):
    """asyncio client: `async with AsyncSidecarClient() as client: await client.rerank(query, documents)`.

    Unset `base_url` and `api_key` come from Settings (RERANK_SIDECAR_HOST/PORT, RERANK_API_KEY).
    """

    @staticmethod
    def _http_client(transport: httpx.AsyncBaseTransport | None, options: dict[str, Any]) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport, **options)

    async def __aenter__(self) -> AsyncSidecarClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: _Call[Reply]) -> Reply:
        async def attempt() -> httpx.Response:
            return _checked(await self._http.request(call.method, call.path, json=call.body))

        try:
            response = await AsyncRetrying(**_retry_options(self.retry))(attempt)
        except httpx.TransportError as error:
            return self._fallback_for(call, SidecarUnreachable(self.base_url, error))
        return call.parse(response.content)
