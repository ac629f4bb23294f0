"""A `rerank-sidecar serve` subprocess (or a benchmark baseline server), started and waited for until it answers.

The one way `ensure`, the benchmarks and the tests start servers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
from pydantic import ValidationError

from .api.schemas import HealthResponse

# Seconds one /health probe may take; a local sidecar answers in milliseconds, but a busy machine can stall it.
PROBE_TIMEOUT_S = 10.0
# Pause between two readiness probes of a starting server.
POLL_INTERVAL_S = 0.1
# Seconds to wait for the exit of a server after SIGKILL.
KILL_WAIT_S = 10.0
# Lines of the server's output quoted when it fails to start.
OUTPUT_TAIL_LINES = 20


class SidecarExited(RuntimeError):
    """The server exited before it answered; the message quotes the end of its output."""


class SidecarStartTimeout(TimeoutError):
    """The server did not answer in time and was killed; the message quotes the end of its output."""


def spawn_sidecar(
    host: str,
    port: int,
    output: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_level: str = "warning",
    extra_args: Sequence[str] = (),
    detach: bool = False,
) -> subprocess.Popen:
    """Starts `serve` on host:port with stdout and stderr appended to `output`; `detach` puts it in its own session."""
    serve = ["-m", "rerank_sidecar.cli", "serve", "--log-level", log_level, *extra_args]
    return spawn_server(serve, host, port, output, env=env, cwd=cwd, detach=detach)


def spawn_server(
    argv: Sequence[str],
    host: str,
    port: int,
    output: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    detach: bool = False,
    python: str | None = None,
) -> subprocess.Popen:
    """Starts `python argv --host host --port port` (a sidecar, or a benchmark's baseline server) logging to `output`;
    `python` is this interpreter unless given (a server installed in a venv of its own)."""
    command = [python or sys.executable, *argv, "--host", host, "--port", str(port)]
    with output.open("ab") as sink:
        return subprocess.Popen(
            command, env=dict(env) if env is not None else None, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=sink, stderr=subprocess.STDOUT, start_new_session=detach,
        )


def wait_until_healthy(
    url: str, process: subprocess.Popen, timeout_s: float, output: Path, *, own_pid: bool = True
) -> HealthResponse:
    """The sidecar's /health once it answers 200 (from `process` itself, when `own_pid`).

    Raises SidecarExited when the process ends first, and SidecarStartTimeout (after killing it)
    when `timeout_s` passes. A Ray proxy answers from another process, and non-200 until the app
    behind it is deployed: pass `own_pid=False` there.
    """
    health: HealthResponse | None = None

    def ready(response: httpx.Response) -> bool:
        nonlocal health
        health = _sidecar_health(response)
        return health is not None and (not own_pid or health.pid == process.pid)

    wait_until_answering(url, process, timeout_s, output, ready)
    assert health is not None
    return health


def wait_until_answering(
    url: str,
    process: subprocess.Popen,
    timeout_s: float,
    output: Path,
    ready: Callable[[httpx.Response], bool] = lambda response: response.status_code == 200,
) -> httpx.Response:
    """The server's first /health answer that `ready` accepts; SidecarExited or SidecarStartTimeout otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SidecarExited(
                f"the sidecar exited with status {process.returncode} before answering on {url}; "
                f"the end of {output}:\n{output_tail(output)}"
            )
        try:
            response = httpx.get(f"{url}/health", timeout=PROBE_TIMEOUT_S)
        except httpx.TransportError:
            response = None
        if response is not None and ready(response):
            return response
        time.sleep(POLL_INTERVAL_S)
    process.kill()
    process.wait(KILL_WAIT_S)
    raise SidecarStartTimeout(
        f"the sidecar did not answer on {url} within {timeout_s} s (killed it); the end of {output}:\n"
        f"{output_tail(output)}"
    )


def _sidecar_health(response: httpx.Response) -> HealthResponse | None:
    """A sidecar's health from a 200 /health answer; None for anything else (still starting, or not a sidecar)."""
    if response.status_code != 200:
        return None
    try:
        return HealthResponse.model_validate_json(response.content)
    except ValidationError:
        return None


def output_tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> str:
    """The last `lines` lines of a server's output file."""
    text = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(text[-lines:])
