"""`rerank-sidecar ensure` and `stop` as launchers run them: real processes, real ports, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import ENSURE, Launcher, server_processes, sidecar_env, single_line, wait_gone

from rerank_sidecar.client import SidecarClient
from rerank_sidecar.config import BUILTIN_MODEL_ID
from rerank_sidecar.launcher import ExitCode

APPLE = "An apple is a red, crunchy fruit."
QCD = "Quantum chromodynamics describes the strong interaction."
QUERY = "What fruit is red and crunchy?"
CONCURRENT_LAUNCHERS = 8


def test_concurrent_ensures_start_one_sidecar_and_stop_ends_it(launcher: Launcher) -> None:
    processes = [
        subprocess.Popen(launcher.command(*ENSURE), env=launcher.env, cwd=launcher.workdir,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(CONCURRENT_LAUNCHERS)
    ]
    outputs = [process.communicate(timeout=240) for process in processes]
    assert [process.returncode for process in processes] == [ExitCode.OK] * CONCURRENT_LAUNCHERS, outputs
    answers = [json.loads(single_line(stdout)) for stdout, _ in outputs]

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
    assert json.loads(single_line(stopped.stdout)) == {"pid": pid, "forced": False}
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
