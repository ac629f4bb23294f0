"""Shared fixtures: live sidecar processes on free loopback ports, and the TREC DL 2020 data."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from rerank_sidecar.process import spawn_sidecar, wait_until_healthy

REPO = Path(__file__).resolve().parents[1]
TREC_DIR = Path(os.environ.get("RERANK_TREC_DIR", REPO.parent / "shared" / "data" / "trec-dl-2020"))
# One derived-file cache (ONNX exports) for the whole session, in-process and in every test server:
# each export is made once, and nothing is written to the user's own cache.
os.environ["RERANK_CACHE_DIR"] = tempfile.mkdtemp(prefix="rerank-test-cache-")
atexit.register(shutil.rmtree, os.environ["RERANK_CACHE_DIR"], True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    """A sidecar subprocess serving on 127.0.0.1."""

    url: str
    process: subprocess.Popen
    log_path: Path
    output_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines() if self.log_path.exists() else []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def sidecar_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """A clean environment for a sidecar: no stray RERANK_* from the caller, logs under tmp_path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env.update(
        RERANK_LOG_PATH=str(tmp_path / "requests.jsonl"),
        RERANK_CACHE_DIR=os.environ["RERANK_CACHE_DIR"],
        RERANK_THREADS=env.get("RERANK_TEST_THREADS", "2"),
        PYTHONUNBUFFERED="1",
    )
    env.update({f"RERANK_{key.upper()}": value for key, value in settings.items()})
    return env


def start_server(tmp_path: Path, env: dict[str, str] | None = None, ready_timeout: float = 60.0) -> LiveServer:
    env = env or sidecar_env(tmp_path)
    port = free_port()
    output = tmp_path / f"server-{port}.out"
    process = spawn_sidecar("127.0.0.1", port, output, env=env, cwd=tmp_path)
    server = LiveServer(f"http://127.0.0.1:{port}", process, Path(env["RERANK_LOG_PATH"]), output, env)
    wait_until_healthy(server.url, process, ready_timeout, output)
    return server


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator:
    """Starts sidecars with `factory(**settings, extra_env={...})`; every one is stopped when the test ends.

    Settings become RERANK_* variables; `extra_env` sets others (e.g. HF_HOME) as given.
    """
    started: list[LiveServer] = []

    def factory(workdir: Path | None = None, extra_env: dict[str, str] | None = None, **settings: str) -> LiveServer:
        workdir = workdir or tmp_path / f"sidecar{len(started)}"
        workdir.mkdir(parents=True, exist_ok=True)
        env = sidecar_env(workdir, **settings) | (extra_env or {})
        server = start_server(workdir, env)
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def builtin_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One sidecar on the embedded default model, shared by a test module."""
    workdir = tmp_path_factory.mktemp("builtin")
    server = start_server(workdir, sidecar_env(workdir))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trec_dir() -> Path:
    if not (TREC_DIR / "bm25-top100.json").is_file():
        pytest.fail(f"TREC DL 2020 data not found at {TREC_DIR} (set RERANK_TREC_DIR)")
    return TREC_DIR


@pytest.fixture(scope="session")
def builtin_reference_scores(trec_dir: Path):  # -> dict[str, np.ndarray]
    """In-process raw scores of the embedded default with default settings (int8 on the CPU) on every
    TREC DL 2020 candidate, computed once: the reference the HTTP scores (test_quality) are held to.
    """
    from rerank_sidecar.evaluation.inprocess import score_in_process
    from rerank_sidecar.evaluation.trec import load_benchmark

    return score_in_process(load_benchmark(trec_dir))


@pytest.fixture(scope="session")
def builtin_fp32_scores(trec_dir: Path):  # -> dict[str, np.ndarray]
    """The same in fp32 (RERANK_QUANTIZE=none), computed once: what the default's int8 quality is held to."""
    from rerank_sidecar.evaluation.inprocess import score_in_process
    from rerank_sidecar.evaluation.trec import load_benchmark

    return score_in_process(load_benchmark(trec_dir), quantize="none")


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT cross-encoder directory, built once per session."""
    from model_factory import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


@pytest.fixture(scope="session")
def tiny_qwen3_cache(tmp_path_factory: pytest.TempPathFactory):  # -> model_factory.TinyQwen3Cache
    """A tiny random Qwen3-Reranker-0.6B (real tokenizer and vocabulary) in a HuggingFace cache, built once."""
    from model_factory import TinyQwen3Cache, build_tiny_qwen3_cache

    hf_home = tmp_path_factory.mktemp("hf-home")
    repo_id, sha = build_tiny_qwen3_cache(hf_home)
    return TinyQwen3Cache(hf_home, repo_id, sha)
