"""The sidecar as a Ray Serve application: the same FastAPI app and engine on several replicas.

Each replica builds its own app with `create_app` (its own model, engine, metrics registry and
request log) and loads the model before Ray routes traffic to it. Ray's proxy spreads requests over
the replicas and replaces one that dies; between RERANK_RAY_MIN_REPLICAS and RERANK_RAY_MAX_REPLICAS
Ray's autoscaler adds and removes replicas to keep RERANK_RAY_TARGET_ONGOING_REQUESTS in flight each.

Needs the extra (`pip install 'rerank-sidecar[ray]'`); nothing in the base package imports this module.

    rerank-sidecar serve --ray --replicas 2                  # a local Ray instance, stopped on exit
    rerank-sidecar serve --ray --address ray://head:10001    # an existing cluster
    serve run rerank_sidecar.ray_serve:build_app ray_max_replicas=4   # Ray's own CLI; args are settings
"""

from __future__ import annotations

import math
import signal
import sys
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from prometheus_client import Gauge
import ray
from ray import serve
from ray.serve import Application
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .api.errors import error_response
from .api.middleware import REQUEST_ID_HEADER
from .config import Settings

APP_NAME = "rerank-sidecar"
"""Name of the Serve application (and its deployment) on the cluster."""
REPLICA_HEADER = "X-Rerank-Replica"
"""Response header naming the replica that answered."""
PROXY_CALLBACK_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
"""Environment variable through which Ray's HTTP proxies load `proxy_middlewares`."""
PROXY_CALLBACK = f"{__name__}.proxy_middlewares"
"""Import path of `proxy_middlewares`."""
PROXY_RETRY_AFTER_S = 1
"""Seconds a client waits before retrying a request the proxy could not get answered (a replica restarts meanwhile)."""
_PROXY_ERROR_TYPES = {503: "replica_unavailable", 408: "deadline_exceeded"}


class ReplicaHeaderMiddleware:
    """Names the answering replica on every response, so a client or a /metrics scrape knows whose figures it got."""

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.replica_id = replica_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_naming_replica(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(REPLICA_HEADER, self.replica_id)
            await send(message)

        await self.app(scope, receive, send_naming_replica)


class ProxyErrorsMiddleware:
    """In each of Ray's HTTP proxies: the proxy's own failures as the sidecar's errors, 503s with Retry-After.

    A replica that dies mid-request leaves the proxy with no answer (uvicorn would send a bare 500), and
    Ray's own 503s (no replica ready, overload) are plain text, some without Retry-After. Sidecar clients
    retry a 503 after its Retry-After, so both become the sidecar's JSON 503. Responses that carry
    REPLICA_HEADER come from the sidecar app and pass unchanged but for the X-Request-ID Ray's proxy
    repeats. Ray's own /-/ routes are left alone.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/-/"):
            await self.app(scope, receive, send)
            return
        answered = False
        proxy_error: Message | None = None
        proxy_body: list[bytes] = []

        async def send_or_translate(message: Message) -> None:
            nonlocal answered, proxy_error
            if message["type"] == "http.response.start":
                if message["status"] >= 400 and REPLICA_HEADER.lower() not in Headers(raw=message["headers"]):
                    proxy_error = message
                    return
                message["headers"] = _one_request_id(message["headers"])
            if proxy_error is None:
                answered = True
                await send(message)
                return
            proxy_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                answered = True
                await _as_sidecar_error(proxy_error, b"".join(proxy_body))(scope, receive, send)

        await self.app(scope, receive, send_or_translate)
        if not answered:
            message = "the replica serving this request stopped before answering; retry after Retry-After"
            headers = {"Retry-After": str(PROXY_RETRY_AFTER_S)}
            if request_id := Headers(scope=scope).get(REQUEST_ID_HEADER):
                headers[REQUEST_ID_HEADER] = request_id
            await error_response(503, "replica_unavailable", message, headers)(scope, receive, send)


def _one_request_id(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The sidecar's X-Request-ID only: Ray's proxy appends the same id a second time."""
    request_id = REQUEST_ID_HEADER.encode()
    first = next((index for index, (name, _) in enumerate(headers) if name.lower() == request_id), None)
    return [header for index, header in enumerate(headers) if index == first or header[0].lower() != request_id]


def _as_sidecar_error(start: Message, body: bytes) -> JSONResponse:
    """A response Ray's proxy made itself, in the sidecar's error shape, keeping its status and request id."""
    status = start["status"]
    ray_headers = Headers(raw=start["headers"])
    headers = {"Retry-After": ray_headers.get("retry-after", str(PROXY_RETRY_AFTER_S))} if status == 503 else {}
    if request_id := ray_headers.get(REQUEST_ID_HEADER):
        headers[REQUEST_ID_HEADER] = request_id
    message = body.decode("utf-8", "replace").strip() or f"Ray Serve answered {status}"
    return error_response(status, _PROXY_ERROR_TYPES.get(status, "proxy_error"), message, headers)


def proxy_middlewares() -> list[Middleware]:
    """Ray's proxy callback (PROXY_CALLBACK_VARIABLE): the middlewares every HTTP proxy wraps its app in."""
    return [Middleware(ProxyErrorsMiddleware)]


def replica_settings(configured: dict[str, Any], local_rank: int) -> Settings:
    """The driver's explicit settings, completed on this replica's node, with what must differ per replica.

    Defaults (log and cache paths, the HF cache) resolve on the replica's own node. A replica runs as
    many threads as the CPUs Ray reserved for it, not one per core of the node it shares; and it writes
    its own request log, since several processes rotating one file would lose lines.
    """
    settings = Settings(**configured)
    log = settings.log_path
    updates: dict[str, Any] = {"log_path": log.with_name(f"{log.stem}.replica-{local_rank}{log.suffix}")}
    if settings.threads == 0:
        updates["threads"] = max(1, math.ceil(settings.ray_replica_cpus))
    return settings.model_copy(update=updates)


@serve.ingress()
class RerankReplica:
    """One replica: the sidecar's FastAPI app, built and warmed on the replica itself."""

    def __init__(self, configured: dict[str, Any]) -> None:
        context = serve.get_replica_context()
        self.replica_id = context.replica_tag
        self.settings = replica_settings(configured, context.rank.local_rank)

    async def __serve_build_asgi_app__(self) -> FastAPI:
        """Ray calls this once per replica; the replica takes traffic only once the model is loaded.

        A model that cannot load fails the replica's start, so `serve.run` (and `serve --ray`)
        fails with the loader's message naming the fix, instead of serving 503s.
        """
        # Imported here: Ray's proxies import this module for their middleware and need no torch.
        from .api.app import create_app

        app = create_app(self.settings)
        app.state.replica_id = self.replica_id
        app.add_middleware(ReplicaHeaderMiddleware, replica_id=self.replica_id)
        replica_info = Gauge(
            "rerank_replica_info", "The Ray Serve replica these figures belong to.", ["replica"],
            registry=app.state.metrics.registry,
        )
        replica_info.labels(replica=self.replica_id).set(1)
        await app.state.models.default.engine.load()  # the others load on first use, as in one process
        return app


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Replica count (fixed, or autoscaled between min and max), per-replica resources and concurrency."""
    if settings.ray_min_replicas > settings.ray_max_replicas:
        raise ValueError(
            f"RERANK_RAY_MIN_REPLICAS ({settings.ray_min_replicas}) exceeds "
            f"RERANK_RAY_MAX_REPLICAS ({settings.ray_max_replicas})"
        )
    options: dict[str, Any] = {
        "name": APP_NAME,
        "ray_actor_options": {"num_cpus": settings.ray_replica_cpus, "num_gpus": settings.ray_replica_gpus},
        "max_ongoing_requests": settings.ray_max_ongoing_requests,
    }
    if settings.ray_min_replicas == settings.ray_max_replicas:
        options["num_replicas"] = settings.ray_min_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": settings.ray_min_replicas,
            "max_replicas": settings.ray_max_replicas,
            "target_ongoing_requests": settings.ray_target_ongoing_requests,
        }
    return options


def build_application(settings: Settings) -> Application:
    """The Serve application for `settings`; only explicitly configured values travel to the replicas."""
    configured = settings.model_dump(mode="json", exclude_unset=True)
    return serve.deployment(RerankReplica, **deployment_options(settings)).bind(configured)


def build_app(args: dict[str, str]) -> Application:
    """Application builder for Ray's CLI: `serve run rerank_sidecar.ray_serve:build_app key=value ...`.

    Each key=value is a setting (field name without the RERANK_ prefix) over the environment's.
    """
    return build_application(Settings(**args))


def serve_on_ray(settings: Settings, address: str | None) -> int:
    """`rerank-sidecar serve --ray`: deploys, serves until SIGINT or SIGTERM, then removes what it started.

    With an `address` (an existing cluster) only this application is deleted on exit and the cluster
    stays; without one, a local Ray instance starts here and stops with this command.
    """
    ray.init(address=address or "local")
    try:
        start_serve(settings)
        try:
            serve.run(build_application(settings), name=APP_NAME, route_prefix="/")
        except RuntimeError as failure:
            print(f"rerank-sidecar serve --ray: {failure} {_replica_start_error()}", file=sys.stderr)
            return 1
        print(f"rerank-sidecar on Ray Serve: http://{settings.sidecar_host}:{settings.sidecar_port} "
              f"({_replica_count(settings)} replicas of {settings.served_model_id})", flush=True)
        _wait_for_stop()
    finally:
        if address:
            serve.delete(APP_NAME)
        else:
            serve.shutdown()
        ray.shutdown()
    return 0


def start_serve(settings: Settings) -> None:
    """Starts Serve's proxies on the sidecar's host and port, with the sidecar's error shape for their own failures.

    The proxies inherit the controller's environment, which carries the callback; on a cluster where
    Serve already runs, its proxies keep the options they started with (docs/ray.md says how to set them).
    """
    serve.start(
        http_options={"host": settings.sidecar_host, "port": settings.sidecar_port},
        controller_options={"runtime_env": {"env_vars": {PROXY_CALLBACK_VARIABLE: PROXY_CALLBACK}}},
    )


def _replica_start_error() -> str:
    """Why the replicas failed to start: the last line of the error Ray kept (the loader's message names the fix)."""
    application = serve.status().applications.get(APP_NAME)
    deployment = application.deployments.get(APP_NAME) if application else None
    lines = [line for line in (deployment.message if deployment else "").splitlines() if line.strip()]
    return lines[-1] if lines else "see the replica logs above"


def _replica_count(settings: Settings) -> str:
    if settings.ray_min_replicas == settings.ray_max_replicas:
        return str(settings.ray_min_replicas)
    return f"{settings.ray_min_replicas}-{settings.ray_max_replicas} (autoscaled)"


def _wait_for_stop() -> None:
    # A requested stop unwinds like Ctrl-C, through the caller's clean-up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
