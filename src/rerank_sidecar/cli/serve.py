"""`rerank-sidecar serve`: the sidecar over HTTP, with uvicorn or on Ray Serve replicas."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from ..config import Settings


def _serve(args: argparse.Namespace) -> int:
    from ..api.auth import exposure_refusal

    overrides = {key: value for key, value in (("sidecar_host", args.host), ("sidecar_port", args.port)) if value}
    if args.replicas is not None:
        overrides.update(ray_min_replicas=args.replicas, ray_max_replicas=args.replicas)
    settings = Settings(**overrides)
    if refusal := exposure_refusal(settings):
        print(f"rerank-sidecar serve: {refusal}", file=sys.stderr)
        return 2
    if args.ray:
        try:
            from ..ray_serve import serve_on_ray
        except ModuleNotFoundError as missing:
            if missing.name != "ray":
                raise
            print("rerank-sidecar serve --ray: Ray is not installed: pip install 'rerank-sidecar[ray]'",
                  file=sys.stderr)
            return 2
        return serve_on_ray(settings, args.address)
    if args.replicas is not None or args.address:
        print("rerank-sidecar serve: --replicas and --address need --ray", file=sys.stderr)
        return 2

    import uvicorn

    from ..api.app import create_app

    app = create_app(settings)
    # uvicorn re-raises the SIGTERM it shut down on once in-flight requests are answered, which
    # would end the process as "killed"; a requested stop that finished cleanly exits 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        app,
        host=settings.sidecar_host,
        port=settings.sidecar_port,
        workers=1,
        log_level=args.log_level,
        # In-flight requests end by their own deadline at the latest; shutdown waits no longer.
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    # By now uvicorn has answered in-flight requests and the lifespan has flushed the request log.
    # os._exit skips the interpreter's final garbage collection of torch and transformers, which
    # takes seconds and would only delay the exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="serve the configured models over HTTP: RERANK_MODEL_NAME's, or every one of RERANK_MODELS"
    )
    serve.add_argument("--host", help="bind address (default RERANK_SIDECAR_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default RERANK_SIDECAR_PORT, 8765)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--ray", action="store_true",
                       help="serve on Ray Serve replicas, each a whole sidecar (needs the extra rerank-sidecar[ray])")
    serve.add_argument("--replicas", type=int, help="with --ray: this many replicas, fixed "
                       "(default RERANK_RAY_MIN_REPLICAS to RERANK_RAY_MAX_REPLICAS, autoscaled)")
    serve.add_argument("--address", help="with --ray: an existing Ray cluster "
                       "(default: a local Ray instance, started and stopped here)")
    serve.set_defaults(handler=_serve)
