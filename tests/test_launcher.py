"""`rerank-sidecar ensure` and `stop` as launchers run them: real processes, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import free_port, sidecar_env

from rerank_sidecar.client import SidecarClient
from rerank_sidecar.config import BUILTIN_MODEL_ID
from rerank_sidecar.launcher import ExitCode

APPLE = "An apple is a red, crunchy fruit."
QCD = "Quantum chromodynamics describes the strong interaction."
QUERY = "What fruit is red and crunchy?"
CONCURRENT_LAUNCHERS = 8
# Generous: a 2-core CI box running 8 launchers and a starting server at once is slow to answer.
ENSURE = ("ensure", "--start-timeout", "120")


@dataclass
class Launcher:
    """Runs the CLI the way a consumer's launcher would, against one port and one state dir."""

    port: int
    env: dict[str, str]
    workdir: Path

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
        return json.loads(_single_line(done.stdout))


def _single_line(stdout: str) -> str:
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
    """A free port and a state dir; every sidecar left on that port is killed by pid afterwards."""
    port = free_port()
    env = sidecar_env(tmp_path, sidecar_port=str(port), state_dir=str(tmp_path / "state"))
    yield Launcher(port, env, tmp_path)
    for process in server_processes(port):
        process.kill()
        wait_gone(process.pid)


def test_concurrent_ensures_start_one_sidecar_and_stop_ends_it(launcher: Launcher) -> None:
    processes = [
        subprocess.Popen(launcher.command(*ENSURE), env=launcher.env, cwd=launcher.workdir,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(CONCURRENT_LAUNCHERS)
    ]
    outputs = [process.communicate(timeout=240) for process in processes]
    assert [process.returncode for process in processes] == [ExitCode.OK] * CONCURRENT_LAUNCHERS, outputs
    answers = [json.loads(_single_line(stdout)) for stdout, _ in outputs]

    assert {(answer["url"], answer["pid"]) for answer in answers} == {(launcher.url, answers[0]["pid"])}
    assert sum(answer["started"] for answer in answers) == 1
    assert {(answer["model"], answer["revision"]) for answer in answers} == {(BUILTIN_MODEL_ID, answers[0]["revision"])}
    pid = answers[0]["pid"]
    assert [process.pid for process in server_processes(launcher.port)] == [pid]
    assert json.loads(launcher.pid_file.read_text())["pid"] == pid
    health = httpx.get(f"{launcher.url}/health", timeout=10).json()
    assert health["status"] == "ready" and health["pid"] == pid  # ensure warmed it

    stopped = launcher.run("stop")
    assert stopped.returncode == ExitCode.OK, stopped.stderr
    assert json.loads(_single_line(stopped.stdout)) == {"pid": pid, "forced": False}
    assert server_processes(launcher.port) == []
    assert not launcher.pid_file.exists()
    again = launcher.run("stop")
    assert again.returncode == ExitCode.NOT_RUNNING and "no pid file" in again.stderr


def test_ensure_after_kill9_starts_a_fresh_sidecar_and_stop_lets_requests_finish(launcher: Launcher) -> None:
    first = launcher.ensure()
    os.kill(first["pid"], signal.SIGKILL)
    wait_gone(first["pid"])

    second = launcher.ensure()
    assert second["started"] is True and second["pid"] != first["pid"]
    assert [process.pid for process in server_processes(launcher.port)] == [second["pid"]]
    with SidecarClient(launcher.url, api_key="") as client:
        reply = client.rerank(QUERY, [QCD, APPLE])
    assert reply.fallback is False and reply.model == BUILTIN_MODEL_ID
    assert [result.index for result in reply.results] == [1, 0]

    # A request in flight when stop sends SIGTERM still gets its whole answer.
    documents = [f"{APPLE} Variant {number}." for number in range(120)]
    answers: list = []

    def long_request() -> None:
        with SidecarClient(launcher.url, api_key="") as client:
            answers.append(client.rerank(QUERY, documents))

    worker = threading.Thread(target=long_request)
    worker.start()
    _wait_for_queued_pairs(launcher.url)
    stopped = launcher.run("stop")
    worker.join(120)
    assert stopped.returncode == ExitCode.OK, stopped.stderr
    assert len(answers) == 1 and len(answers[0].scores) == len(documents) and answers[0].fallback is False
    assert server_processes(launcher.port) == []


def _wait_for_queued_pairs(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/health", timeout=10).json()["queue_depth"] > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the long request never showed up in the queue")


@pytest.mark.parametrize(
    ("setting", "value", "served"),
    [
        ("RERANK_MODEL_NAME", "/models/another-reranker", BUILTIN_MODEL_ID),
        ("RERANK_MODEL_REVISION", "0123abcd", "main"),
    ],
)
def test_ensure_refuses_a_sidecar_serving_another_model(
    builtin_sidecar, tmp_path: Path, setting: str, value: str, served: str
) -> None:
    port = int(builtin_sidecar.url.rsplit(":", 1)[1])
    env = sidecar_env(tmp_path, sidecar_port=str(port), state_dir=str(tmp_path / "state"))
    refused = Launcher(port, env, tmp_path).run("ensure", **{setting: value})
    assert refused.returncode == ExitCode.MODEL_MISMATCH
    assert refused.stdout == ""
    assert repr(value) in refused.stderr and repr(served) in refused.stderr
    assert [process.pid for process in server_processes(port)] == [builtin_sidecar.process.pid]


def test_ensure_refuses_a_port_taken_by_another_http_server(launcher: Launcher) -> None:
    class NotASidecar(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *_: object) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", launcher.port), NotASidecar)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        refused = launcher.run("ensure", timeout=60)
    finally:
        other.shutdown()
        other.server_close()
    assert refused.returncode == ExitCode.START_FAILED
    assert "is not a rerank-sidecar" in refused.stderr and launcher.url in refused.stderr
    assert server_processes(launcher.port) == []


def test_ensure_reports_a_model_that_cannot_load_and_leaves_nothing_running(launcher: Launcher, tmp_path: Path) -> None:
    failed = launcher.run(
        *ENSURE, RERANK_MODEL_NAME="Qwen/Qwen3-Reranker-0.6B", HF_HOME=str(tmp_path / "empty-hf-home")
    )
    assert failed.returncode == ExitCode.WARMUP_FAILED, failed.stderr
    assert "model_unavailable" in failed.stderr and "never downloads" in failed.stderr
    assert server_processes(launcher.port) == []
    assert not launcher.pid_file.exists()


def test_ensure_reports_a_server_that_exits_at_start(launcher: Launcher) -> None:
    # Binding beyond loopback without an API key makes `serve` refuse to start.
    failed = launcher.run(*ENSURE, RERANK_SIDECAR_HOST="0.0.0.0", timeout=120)
    assert failed.returncode == ExitCode.START_FAILED
    assert "exited with status" in failed.stderr and "RERANK_API_KEY" in failed.stderr  # the server's own words
    assert server_processes(launcher.port) == []
    assert not launcher.pid_file.exists()
