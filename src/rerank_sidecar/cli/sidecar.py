"""`rerank-sidecar ensure`, `stop` and `rerank`: thin argparse front ends of launcher.py and the client.

Each prints one JSON line on stdout on success, and one `rerank-sidecar <command>: ...` line on
stderr with an `ExitCode` status on failure.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from ..api.schemas import RerankRequest
from ..client import SidecarClient, SidecarHTTPError, SidecarUnreachable
from ..launcher import ExitCode, LaunchError, ensure_sidecar, stop_sidecar

ENSURE_EPILOG = """exit status: 0 ready (prints {url, pid, started, name, model, revision}); 2 --model names no
configured model; 3 a sidecar answers on the port but does not list that model at that revision; 4 start failed
or timed out (or the port is taken by something else); 5 warm-up failed (the model did not load)"""

STOP_EPILOG = """exit status: 0 stopped (prints {pid, forced}); 6 no sidecar started by ensure is running
on this port; 7 it could not be stopped"""

RERANK_EPILOG = """exit status: 0 ok (prints the /rerank response); 2 bad input; 8 the sidecar refused the
request (4xx/5xx, message on stderr); 9 the sidecar could not be reached"""


def _fail(command: str, code: ExitCode, message: object) -> int:
    print(f"rerank-sidecar {command}: {message}", file=sys.stderr)
    return code


def _ensure(args: argparse.Namespace) -> int:
    try:
        result = ensure_sidecar(
            model=args.model, start_timeout_s=args.start_timeout, warmup_timeout_s=args.warmup_timeout,
            log_level=args.log_level,
        )
    except LaunchError as error:
        return _fail("ensure", error.code, error)
    print(result.model_dump_json(), flush=True)
    return ExitCode.OK


def _stop(args: argparse.Namespace) -> int:
    try:
        result = stop_sidecar(grace_s=args.grace)
    except LaunchError as error:
        return _fail("stop", error.code, error)
    print(result.model_dump_json(), flush=True)
    return ExitCode.OK


def _rerank_request(args: argparse.Namespace) -> RerankRequest:
    """From the arguments, or from a JSON request body on stdin when no query is given."""
    if args.query is None:
        return RerankRequest.model_validate_json(sys.stdin.read())
    return RerankRequest(
        query=args.query,
        documents=args.documents,
        top_n=args.top_n,
        instruction=args.instruction,
        raw_scores=args.raw_scores,
        return_documents=args.return_documents,
        model=args.model,
    )


def _rerank(args: argparse.Namespace) -> int:
    try:
        request = _rerank_request(args)
    except ValidationError as error:
        return _fail("rerank", ExitCode.BAD_INPUT, error)
    try:
        with SidecarClient(args.url, timeout_s=args.timeout, fallback=args.fallback) as client:
            reply = client.rerank_request(request)
    except SidecarHTTPError as error:
        return _fail("rerank", ExitCode.REQUEST_FAILED, error)
    except SidecarUnreachable as error:
        return _fail("rerank", ExitCode.UNREACHABLE, error)
    print(reply.model_dump_json(exclude_none=True), flush=True)
    return ExitCode.OK


def add_ensure(commands: argparse._SubParsersAction) -> None:
    ensure = commands.add_parser(
        "ensure",
        help="start the configured sidecar unless one serving the model answers, warm the model, print "
        "{url, pid, started, name, model, revision}",
        epilog=ENSURE_EPILOG,
    )
    ensure.add_argument("--model", help="the configured model to ensure and warm: a name in RERANK_MODELS or "
                        "RERANK_MODEL_NAME's id (default: the first configured)")
    ensure.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for /health (default 60)")
    ensure.add_argument("--warmup-timeout", type=float, default=600.0, help="seconds to wait for /warmup (default 600)")
    ensure.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                        help="log level of a server this call starts (its output goes to RERANK_STATE_DIR)")
    ensure.set_defaults(handler=_ensure)


def add_stop(commands: argparse._SubParsersAction) -> None:
    stop = commands.add_parser(
        "stop", help="stop the sidecar `ensure` started on this port (SIGTERM, then SIGKILL)", epilog=STOP_EPILOG
    )
    stop.add_argument("--grace", type=float,
                      help="seconds between SIGTERM and SIGKILL (default RERANK_REQUEST_TIMEOUT_S + 10)")
    stop.set_defaults(handler=_stop)


def add_rerank(commands: argparse._SubParsersAction) -> None:
    rerank = commands.add_parser(
        "rerank",
        help="score documents against a query through the running sidecar; prints the response JSON",
        description="Pass QUERY DOCUMENT..., or no query and a POST /rerank JSON body on stdin.",
        epilog=RERANK_EPILOG,
    )
    rerank.add_argument("query", nargs="?", help="the query (omit it to read a JSON request from stdin)")
    rerank.add_argument("documents", nargs="*", help="documents to score")
    rerank.add_argument("--top-n", type=int, help="keep the best n in results")
    rerank.add_argument("--instruction", help="Qwen3-Reranker task instruction")
    rerank.add_argument("--raw-scores", action="store_true", help="raw model scores instead of [0, 1]")
    rerank.add_argument("--return-documents", action="store_true", help="echo document texts in results")
    rerank.add_argument("--model", help="expected served model (refused when it differs)")
    rerank.add_argument("--url", help="sidecar base URL (default from RERANK_SIDECAR_HOST/PORT)")
    rerank.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    rerank.add_argument("--fallback", choices=["none", "positional"], default="none",
                        help="positional: print 1/(1+rank) scores flagged fallback when the sidecar is unreachable")
    rerank.set_defaults(handler=_rerank)
