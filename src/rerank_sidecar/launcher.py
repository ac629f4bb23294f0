"""`ensure` and `stop`: many consumer processes share one warm sidecar, started at most once.

`ensure_sidecar` probes /health; when nothing answers it takes an inter-process file lock, probes
again (another launcher may have won the race), starts `rerank-sidecar serve` detached, waits for
/health, then calls /warmup. A sidecar that answers but serves another model or revision is never
reused. The lock, the pid file and the started server's output live in `Settings.state_dir`, one
set per port, so sidecars on different ports do not meet.
"""

from __future__ import annotations

import os
import time
from enum import IntEnum
from pathlib import Path

import httpx
import psutil
from filelock import FileLock
from filelock import Timeout as LockTimeout
from pydantic import BaseModel, Field, ValidationError

from .api.schemas import HealthResponse, ModelHealth
from .client import RetryPolicy, SidecarClient, SidecarError, SidecarHTTPError, SidecarUnreachable, sidecar_url
from .config import ModelSpec, Settings
from .process import (
    KILL_WAIT_S,
    POLL_INTERVAL_S,
    PROBE_TIMEOUT_S,
    SidecarExited,
    SidecarStartTimeout,
    spawn_sidecar,
    wait_until_healthy,
)

# `serve` lets in-flight requests run up to RERANK_REQUEST_TIMEOUT_S (+5 s) after SIGTERM; stop waits a bit longer.
STOP_GRACE_MARGIN_S = 10.0


class ExitCode(IntEnum):
    """Exit status of `ensure`, `stop` and `rerank`; 1 stays an unexpected Python error."""

    OK = 0
    BAD_INPUT = 2  # as argparse exits on bad arguments
    MODEL_MISMATCH = 3
    START_FAILED = 4
    WARMUP_FAILED = 5
    NOT_RUNNING = 6
    STOP_FAILED = 7
    REQUEST_FAILED = 8
    UNREACHABLE = 9


class LaunchError(Exception):
    """`ensure` or `stop` could not do its job; `code` is the process exit status to use."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class EnsureResult(BaseModel):
    """The one JSON line `ensure` prints."""

    url: str = Field(description="Base URL of the sidecar.")
    pid: int = Field(description="Process id of the sidecar, from its /health.")
    started: bool = Field(description="True when this call started it; false when it was already running.")
    name: str = Field(description="The name of the warmed model in the sidecar's list (what requests send as `model`).")
    model: str = Field(description="Served model id.")
    revision: str = Field(description="Served (resolved) revision.")


class StopResult(BaseModel):
    """The one JSON line `stop` prints."""

    pid: int = Field(description="Process id of the stopped sidecar.")
    forced: bool = Field(description="True when SIGTERM's grace period ran out and SIGKILL ended it.")


class PidRecord(BaseModel):
    """Contents of the pid file: which process `ensure` started, identified beyond its reusable pid."""

    pid: int = Field(description="Process id of the started server.")
    create_time: float = Field(description="psutil create_time of that process, to tell a reused pid apart.")
    url: str = Field(description="Base URL it serves.")


class StateFiles(BaseModel):
    """Where one port's launcher state lives."""

    pid_file: Path = Field(description="PidRecord of the server `ensure` started.")
    lock_file: Path = Field(description="Inter-process lock held while starting or stopping.")
    log_file: Path = Field(description="stdout and stderr of the started server.")

    @classmethod
    def for_settings(cls, settings: Settings) -> StateFiles:
        stem = settings.state_dir / f"sidecar-{settings.sidecar_port}"
        return cls(
            pid_file=stem.with_suffix(".pid"), lock_file=stem.with_suffix(".lock"), log_file=stem.with_suffix(".log")
        )


def ensure_sidecar(
    settings: Settings | None = None,
    *,
    model: str | None = None,
    start_timeout_s: float = 60.0,
    warmup_timeout_s: float = 600.0,
    log_level: str = "warning",
) -> EnsureResult:
    """Returns a warm sidecar that serves `model`, starting one if none answers.

    `model` names one of the configured models (a name in RERANK_MODELS, or the served id of
    RERANK_MODEL_NAME); None is the first. A running sidecar is reused when that model is among
    the models it lists, at the same revision; then that model is warmed.
    """
    settings = settings or Settings()
    wanted = wanted_model(settings, model)
    url = sidecar_url(settings)
    health = probe(url)
    started = False
    if health is None:
        health, started = _start_once(settings, url, start_timeout_s, log_level)
    served = check_model(wanted, health, url)
    # A model that failed to load answers 503 with a long Retry-After: report it now rather than wait.
    warmup_client = SidecarClient(url, api_key=settings.api_key, timeout_s=warmup_timeout_s,
                                  retry=RetryPolicy(max_retry_after_s=5.0))
    try:
        with warmup_client:
            warm = warmup_client.warmup(model=served.name)
    except SidecarError as error:
        if started:
            _discard_failed_start(StateFiles.for_settings(settings))
        raise LaunchError(ExitCode.WARMUP_FAILED, f"warm-up of {served.model} at {url} failed: {error}") from error
    return EnsureResult(url=url, pid=health.pid, started=started, name=served.name, model=warm.model,
                        revision=warm.revision)


def wanted_model(settings: Settings, name: str | None) -> ModelSpec:
    """The configured model a launcher asks for: by name (or served id), or the first configured one."""
    specs = settings.model_specs
    if name is None:
        return specs[0]
    for spec in specs:
        if name in (*spec.names, spec.served_model_id):
            return spec
    listed = ", ".join(repr(spec.name) for spec in specs)
    raise LaunchError(ExitCode.BAD_INPUT, f"--model {name!r} is not among this launcher's configured models ({listed})")


def probe(url: str) -> HealthResponse | None:
    """The sidecar's /health, or None when nothing listens; LaunchError when something else does."""
    try:
        with SidecarClient(url, api_key="", timeout_s=PROBE_TIMEOUT_S, retry=RetryPolicy(attempts=1)) as client:
            return client.health()
    except SidecarUnreachable as error:
        if isinstance(error.cause, httpx.ConnectError):
            return None  # connection refused: nothing listens
        raise LaunchError(ExitCode.START_FAILED, f"{error}; free the port or set RERANK_SIDECAR_PORT") from error
    except (SidecarHTTPError, ValidationError) as error:
        raise LaunchError(
            ExitCode.START_FAILED,
            f"{url} answers but is not a rerank-sidecar (/health: {error}); free the port or set RERANK_SIDECAR_PORT",
        ) from error


def check_model(wanted: ModelSpec, health: HealthResponse, url: str) -> ModelHealth:
    """The running sidecar's entry for the wanted model; refuses a sidecar that does not list it at that revision."""
    for served in health.models:
        named = wanted.name in (served.name, *served.aliases) or _same_model(wanted.served_model_id, served.model)
        if named and wanted.revision in (served.configured_revision, served.revision):
            return served
    listing = "; ".join(
        f"{served.name!r} = model {served.model!r} at revision {served.configured_revision!r} "
        f"(resolved {served.revision!r})"
        for served in health.models
    )
    raise LaunchError(
        ExitCode.MODEL_MISMATCH,
        f"the sidecar at {url} (pid {health.pid}) serves {listing}, but this launcher is configured for "
        f"model {wanted.served_model_id!r} ({wanted.name!r}) at revision {wanted.revision!r}; stop that sidecar "
        f"(rerank-sidecar stop), list the model in its RERANK_MODELS, or use another RERANK_SIDECAR_PORT",
    )


def _same_model(wanted: str, served: str) -> bool:
    """Equal ids, or two spellings of one local model directory."""
    if wanted == served:
        return True
    wanted_path, served_path = Path(wanted).expanduser(), Path(served).expanduser()
    return wanted_path.is_dir() and served_path.is_dir() and wanted_path.resolve() == served_path.resolve()


def _start_once(settings: Settings, url: str, start_timeout_s: float, log_level: str) -> tuple[HealthResponse, bool]:
    """Under the lock: the sidecar another launcher started meanwhile, or one started here."""
    files = StateFiles.for_settings(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(files.lock_file, timeout=start_timeout_s):
            health = probe(url)
            if health is not None:
                return health, False
            return _spawn_and_wait(settings, files, url, start_timeout_s, log_level), True
    except LockTimeout as error:
        raise LaunchError(
            ExitCode.START_FAILED, f"another launcher held {files.lock_file} for more than {start_timeout_s} s"
        ) from error


def _spawn_and_wait(
    settings: Settings, files: StateFiles, url: str, start_timeout_s: float, log_level: str
) -> HealthResponse:
    """Starts `serve` in its own session (it outlives this launcher) and waits until it answers."""
    process = spawn_sidecar(settings.sidecar_host, settings.sidecar_port, files.log_file, log_level=log_level,
                            detach=True)
    record = PidRecord(pid=process.pid, create_time=psutil.Process(process.pid).create_time(), url=url)
    _write_pid_file(files.pid_file, record)
    try:
        return wait_until_healthy(url, process, start_timeout_s, files.log_file)
    except (SidecarExited, SidecarStartTimeout) as error:
        files.pid_file.unlink(missing_ok=True)
        raise LaunchError(ExitCode.START_FAILED, str(error)) from error


def _discard_failed_start(files: StateFiles) -> None:
    """Stops a sidecar this launcher started but could not warm, so a fixed configuration takes effect next time."""
    try:
        _stop_started(files, KILL_WAIT_S)
    except LaunchError:
        pass  # it has exited on its own already: nothing is left to stop


def _write_pid_file(path: Path, record: PidRecord) -> None:
    """Writes whole or not at all, so a concurrent reader never sees half a record."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(record.model_dump_json())
    partial.replace(path)


def stop_sidecar(settings: Settings | None = None, *, grace_s: float | None = None) -> StopResult:
    """SIGTERM to the sidecar `ensure` started (uvicorn finishes in-flight requests), SIGKILL after grace_s.

    The default grace outlasts the server's own shutdown deadline for in-flight requests.
    """
    settings = settings or Settings()
    if grace_s is None:
        grace_s = settings.request_timeout_s + STOP_GRACE_MARGIN_S
    files = StateFiles.for_settings(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(files.lock_file, timeout=grace_s + KILL_WAIT_S):
            return _stop_started(files, grace_s)
    except LockTimeout as error:
        raise LaunchError(ExitCode.STOP_FAILED, f"another launcher held {files.lock_file} for too long") from error


def _stop_started(files: StateFiles, grace_s: float) -> StopResult:
    record = _read_pid_file(files.pid_file)
    process = _live_server(record) if record else None
    if record is None or process is None:
        files.pid_file.unlink(missing_ok=True)
        what = (
            f"pid {record.pid} recorded in {files.pid_file} has already exited"
            if record
            else f"no pid file at {files.pid_file}"
        )
        raise LaunchError(ExitCode.NOT_RUNNING, f"no sidecar started by ensure is running: {what}")
    process.terminate()
    forced = not _wait_gone(process, grace_s)
    if forced:
        process.kill()
        if not _wait_gone(process, KILL_WAIT_S):
            raise LaunchError(ExitCode.STOP_FAILED, f"sidecar pid {record.pid} survived SIGKILL for {KILL_WAIT_S} s")
    files.pid_file.unlink(missing_ok=True)
    return StopResult(pid=record.pid, forced=forced)


def _read_pid_file(path: Path) -> PidRecord | None:
    try:
        return PidRecord.model_validate_json(path.read_text())
    except (FileNotFoundError, ValidationError):
        return None


def _live_server(record: PidRecord) -> psutil.Process | None:
    """The recorded server if it still runs; None when it exited or its pid now names another process."""
    try:
        process = psutil.Process(record.pid)
        same_process = abs(process.create_time() - record.create_time) < 0.5
        return process if same_process and not _is_zombie(process) else None
    except psutil.Error:
        return None


def _wait_gone(process: psutil.Process, timeout_s: float) -> bool:
    """True once the process has exited (a zombie counts: it runs no more), False after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            process.wait(POLL_INTERVAL_S)  # reaps our own child; returns once another process is gone
            return True
        except psutil.TimeoutExpired:
            pass
        # An exited process whose parent has not reaped it yet stays a zombie; it serves nothing.
        if _is_zombie(process):
            return True
        if time.monotonic() >= deadline:
            return False


def _is_zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
