"""A sidecar subprocess for benchmarks: loopback only, free port, always stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ..process import spawn_sidecar, wait_until_healthy


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
                 ray_replicas: int | None = None, warm: bool = True) -> Iterator[BenchServer]:
    """Starts `rerank-sidecar serve` with RERANK_* `settings`, warms it up (unless not `warm`), yields it, stops it.

    With `ray_replicas`, it serves on that many Ray Serve replicas of a local Ray instance (`serve --ray`).
    """
    port = _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="rerank-bench-"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env.update({f"RERANK_{key.upper()}": value for key, value in settings.items()})
    env.setdefault("RERANK_LOG_PATH", str(workdir / "requests.jsonl"))
    ray_args = ["--ray", "--replicas", str(ray_replicas)] if ray_replicas else []
    output = workdir / "server.out"
    process = spawn_sidecar("127.0.0.1", port, output, env=env, extra_args=ray_args)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, ready_timeout_s, output, own_pid=not ray_replicas)
        if warm:
            httpx.post(f"{url}/warmup", timeout=ready_timeout_s).raise_for_status()
        yield BenchServer(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
