"""Sidecar (and baseline) subprocesses for benchmarks: loopback only, free port, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ...process import spawn_server, wait_until_answering, wait_until_healthy


@dataclass(frozen=True, slots=True)
class BenchServer:
    """A running benchmark sidecar."""

    url: str
    """Base URL on 127.0.0.1."""
    pid: int
    """Process id, for memory readings."""


def memory_mib(pids: Sequence[int]) -> tuple[float, float]:
    """Summed resident and proportional set sizes of these processes (MiB)."""
    import psutil

    rss = pss = 0
    for pid in pids:
        info = psutil.Process(pid).memory_full_info()
        rss += info.rss
        pss += info.pss
    return round(rss / 2**20, 1), round(pss / 2**20, 1)


def settings_environment(settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with RERANK_* replaced by `settings` (field -> value): a child runs on them only."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env.update({f"RERANK_{key.upper()}": value for key, value in settings.items()})
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def bench_server(settings: Mapping[str, str], ready_timeout_s: float = 120.0,
                 ray_replicas: int | None = None, warm: bool = True) -> Iterator[BenchServer]:
    """Starts `rerank-sidecar serve` with RERANK_* `settings`, warms it up (unless not `warm`), yields it, stops it.

    With `ray_replicas`, it serves on that many Ray Serve replicas of a local Ray instance (`serve --ray`).
    """
    ray_args = ["--ray", "--replicas", str(ray_replicas)] if ray_replicas else []
    env = settings_environment(settings)
    serve = ["-m", "rerank_sidecar.cli", "serve", "--log-level", "warning", *ray_args]

    def ready(url: str, process: subprocess.Popen, output: Path) -> None:
        wait_until_healthy(url, process, ready_timeout_s, output, own_pid=not ray_replicas)

    with _serving(serve, env, ready, ready_timeout_s if warm else None) as server:
        yield server


@contextmanager
def onelock_server(model_dir: str, threads: int, ready_timeout_s: float = 120.0) -> Iterator[BenchServer]:
    """Starts the one-lock baseline (support/onelock.py) on `model_dir`, yields it, and stops it."""
    argv = ["-m", "rerank_sidecar.bench.support.onelock", "--model", model_dir, "--threads", str(threads)]

    def ready(url: str, process: subprocess.Popen, output: Path) -> None:
        wait_until_answering(url, process, ready_timeout_s, output)

    with _serving(argv, dict(os.environ), ready, ready_timeout_s) as server:
        yield server


# The name Infinity serves its one model under, which requests to it name.
INFINITY_MODEL_NAME = "bench-model"


@contextmanager
def infinity_server(python: str, model_dir: str, ready_timeout_s: float = 300.0) -> Iterator[BenchServer]:
    """Starts Infinity (`infinity_emb v2`, torch on the CPU) from the venv of `python` on `model_dir`, offline,
    yields it once its /health answers, and stops it."""
    argv = ["-m", "infinity_emb.cli", "v2", "--model-id", model_dir, "--served-model-name", INFINITY_MODEL_NAME,
            "--engine", "torch", "--device", "cpu", "--no-bettertransformer"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}

    def ready(url: str, process: subprocess.Popen, output: Path) -> None:
        wait_until_answering(url, process, ready_timeout_s, output)

    with _serving(argv, env, ready, None, python) as server:
        yield server


@contextmanager
def _serving(
    argv: list[str],
    env: dict[str, str],
    ready: Callable[[str, subprocess.Popen, Path], None],
    warmup_timeout_s: float | None,
    python: str | None = None,
) -> Iterator[BenchServer]:
    """Runs `python argv --host 127.0.0.1 --port <free>` (this interpreter unless `python` is given) until the
    block ends, once `ready`, warmed up when a `warmup_timeout_s` is given; its output goes to a temp file."""
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    env.setdefault("RERANK_LOG_PATH", str(workdir / "requests.jsonl"))
    output = workdir / "server.out"
    process = spawn_server(argv, "127.0.0.1", port, output, env=env, python=python)
    url = f"http://127.0.0.1:{port}"
    try:
        ready(url, process, output)
        if warmup_timeout_s is not None:
            httpx.post(f"{url}/warmup", timeout=warmup_timeout_s).raise_for_status()
        yield BenchServer(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
