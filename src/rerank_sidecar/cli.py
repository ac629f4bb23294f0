"""The `rerank-sidecar` command: serve, calibrate, and the tools beside them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .config import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .api.app import create_app

    overrides = {key: value for key, value in (("sidecar_host", args.host), ("sidecar_port", args.port)) if value}
    settings = Settings(**overrides)
    uvicorn.run(
        create_app(settings),
        host=settings.sidecar_host,
        port=settings.sidecar_port,
        workers=1,
        log_level=args.log_level,
    )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .bench.calibrate import main as calibrate_main

    return calibrate_main(args)


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve the configured model over HTTP (one process, one model)")
    serve.add_argument("--host", help="bind address (default RERANK_SIDECAR_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default RERANK_SIDECAR_PORT, 8765)")
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.set_defaults(handler=_serve)


def _add_calibrate(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser(
        "calibrate", help="refit the embedded model's cosine -> [0, 1] calibration on TREC DL judgements"
    )
    calibrate.add_argument("--data", required=True, help="directory with bm25-top100.json and qrels.txt")
    calibrate.set_defaults(handler=_calibrate)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_serve, _add_calibrate]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rerank-sidecar", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
