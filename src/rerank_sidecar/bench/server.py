"""A sidecar subprocess for benchmarks: loopback only, free port, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True, slots=True)
class BenchServer:
    """A running benchmark sidecar."""

    url: str
    """Base URL on 127.0.0.1."""
    pid: int
    """Process id, for memory readings."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def bench_server(settings: Mapping[str, str], ready_timeout_s: float = 120.0,
                 ray_replicas: int | None = None) -> Iterator[BenchServer]:
    """Starts `rerank-sidecar serve` with RERANK_* `settings`, warms it up, yields it, and stops it.

    With `ray_replicas`, it serves on that many Ray Serve replicas of a local Ray instance (`serve --ray`).
    """
    ray_args = ["--ray", "--replicas", str(ray_replicas)] if ray_replicas else []
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env.update({f"RERANK_{key.upper()}": value for key, value in settings.items()})
    with _serving(["-m", "rerank_sidecar.cli", "serve", "--log-level", "warning", *ray_args], env,
                  ready_timeout_s) as server:
        yield server


@contextmanager
def onelock_server(model_dir: str, threads: int, ready_timeout_s: float = 120.0) -> Iterator[BenchServer]:
    """Starts the one-lock baseline (bench/onelock.py) on `model_dir`, yields it, and stops it."""
    argv = ["-m", "rerank_sidecar.bench.onelock", "--model", model_dir, "--threads", str(threads)]
    with _serving(argv, dict(os.environ), ready_timeout_s) as server:
        yield server


@contextmanager
def _serving(argv: list[str], env: dict[str, str], ready_timeout_s: float) -> Iterator[BenchServer]:
    """Runs `python argv --host 127.0.0.1 --port <free>` until the block ends; its output goes to a temp file."""
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    env.setdefault("RERANK_LOG_PATH", str(workdir / "requests.jsonl"))
    output = (workdir / "server.out").open("wb")
    process = subprocess.Popen([sys.executable, *argv, "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, ready_timeout_s, workdir / "server.out")
        yield BenchServer(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        output.close()


def _wait_ready(url: str, process: subprocess.Popen, timeout_s: float, output: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"benchmark sidecar exited with {process.returncode}:\n{output.read_text()}")
        try:
            health = httpx.get(f"{url}/health", timeout=1.0)
        except httpx.TransportError:
            health = None
        # Ray's proxy answers (not 200) before the application is deployed behind it.
        if health is not None and health.status_code == 200:
            httpx.post(f"{url}/warmup", timeout=timeout_s).raise_for_status()
            return
        time.sleep(0.2)
    raise TimeoutError(f"benchmark sidecar at {url} not ready within {timeout_s} s:\n{output.read_text()}")
