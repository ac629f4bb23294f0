"""Shared fixtures: live sidecar processes on free loopback ports, launchers (`ensure` / `stop`), the TREC DL
2020 data, the tiny models, and the device the parity tests run on (`-m parity`, RERANK_TEST_DEVICE)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from rerank_sidecar.launcher import ExitCode
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


# `ensure` as the launcher tests call it. Generous: a 2-core CI box running 8 launchers and a starting server
# at once is slow to answer.
ENSURE = ("ensure", "--start-timeout", "120")


@dataclass
class Launcher:
    """Runs the CLI the way a consumer's launcher would, against one port and one state dir."""

    port: int
    """The port its sidecar serves on (RERANK_SIDECAR_PORT)."""
    env: dict[str, str]
    """The whole environment of each command."""
    workdir: Path
    """Where each command runs."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return Path(self.env["RERANK_STATE_DIR"]) / f"sidecar-{self.port}.pid"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rerank_sidecar.cli", *args]

    def run(self, *args: str, timeout: float = 180.0, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), env={**self.env, **env}, cwd=self.workdir,
                              capture_output=True, text=True, timeout=timeout)

    def ensure(self, **env: str) -> dict:
        done = self.run(*ENSURE, **env)
        assert done.returncode == ExitCode.OK, done.stderr
        return json.loads(single_line(done.stdout))


def single_line(stdout: str) -> str:
    """The one line a command printed (asserting there is exactly one)."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    return lines[0]


def server_processes(port: int) -> list[psutil.Process]:
    """Live `rerank_sidecar.cli serve` processes bound (by their command line) to `port`; zombies excluded."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        command = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE or "serve" not in command or "--port" not in command:
            continue
        if command[command.index("--port") + 1] == str(port) and any("rerank_sidecar" in part for part in command):
            found.append(process)
    return found


def wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still runs after {timeout} s")


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """A free port and a state dir; every sidecar left on that port is killed by pid afterwards.

    A test may add to `launcher.env` (other models, HF_HOME) before its first command.
    """
    port = free_port()
    env = sidecar_env(tmp_path, sidecar_port=str(port), state_dir=str(tmp_path / "state"))
    yield Launcher(port, env, tmp_path)
    for process in server_processes(port):
        process.kill()
        wait_gone(process.pid)


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


@pytest.fixture(scope="session")
def tiny_qwen3_embedding(tmp_path_factory: pytest.TempPathFactory):  # -> model_factory.TinyQwen3Cache
    """A tiny random Qwen3-Embedding-0.6B (its published layout, real tokenizer) in a HuggingFace cache, built once."""
    from model_factory import TinyQwen3Cache, build_tiny_qwen3_embedding_cache

    hf_home = tmp_path_factory.mktemp("qwen3-embedding-hf")
    return TinyQwen3Cache(hf_home, *build_tiny_qwen3_embedding_cache(hf_home))


# How far a raw score of the backend under test may sit from its reference, by the precision it runs in.
# Half precision measured on the CPU on the tiny models: fp16 within 0.04 of fp32, bf16 within 0.34; twice that.
PARITY_ATOL = {"float32": 1e-4, "float16": 0.1, "bfloat16": 0.7}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "parity: compares the backend's scores with a reference implementation; runs on RERANK_TEST_DEVICE "
        "(scripts/gpu-check.sh runs these on CUDA)",
    )


@dataclass(frozen=True)
class ParityDevice:
    """Where the parity tests run the backend under test; their references stay fp32 on the CPU."""

    device: str
    """RERANK_TEST_DEVICE: cpu (the default) or cuda."""
    dtype: str
    """RERANK_TEST_DTYPE: float32 (the default), float16 or bfloat16."""

    @property
    def settings(self) -> dict[str, str]:
        """The RERANK_DEVICE and RERANK_DTYPE settings that put a scorer there."""
        return {"device": self.device, "dtype": self.dtype}

    @property
    def atol(self) -> float:
        return PARITY_ATOL[self.dtype]


@pytest.fixture(scope="session")
def parity_device() -> ParityDevice:
    device = ParityDevice(os.environ.get("RERANK_TEST_DEVICE", "cpu"), os.environ.get("RERANK_TEST_DTYPE", "float32"))
    if device.dtype not in PARITY_ATOL:
        pytest.fail(f"RERANK_TEST_DTYPE={device.dtype}: expected one of {', '.join(PARITY_ATOL)}")
    return device


@pytest.fixture
def offline_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading forces offline mode in this process; restore the variables it sets when the test ends."""
    from huggingface_hub import constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", hub_constants.HF_HUB_OFFLINE)
