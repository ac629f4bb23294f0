"""Ray Serve: `rerank-sidecar serve --ray --replicas 2` answers like one sidecar, spreads requests over
both replicas, keeps per-replica metrics, survives a replica killed mid-load, and stops every Ray process.

One local Ray instance for the module (started by the CLI, as a user would), 2 replicas on this 2-core
box with one inference thread each, compared with one plain sidecar on the same settings.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from conftest import LiveServer, free_port, sidecar_env, start_server

pytest.importorskip("ray", reason="the extra rerank-sidecar[ray] is not installed")

from rerank_sidecar.cli import main as cli_main  # noqa: E402
from rerank_sidecar.config import Settings  # noqa: E402
from rerank_sidecar.evaluation.trec import load_benchmark  # noqa: E402
from rerank_sidecar.ray_serve import (  # noqa: E402
    APP_NAME,
    REPLICA_HEADER,
    ProxyErrorsMiddleware,
    RerankReplica,
    build_app,
    deployment_options,
    replica_settings,
)

REPLICAS = 2
# One backend (torch fp32) and one thread per replica and per sidecar, so Ray's answers can equal the
# single sidecar's to 1e-6. (The onnx int8 would do as well: its scores do not move with batch-mates.)
SETTINGS = {"backend": "torch", "threads": "1", "ray_replica_cpus": "0.5"}
READY_LINE = "rerank-sidecar on Ray Serve:"


@dataclass
class RaySidecar:
    """`rerank-sidecar serve --ray` running as a subprocess on a local Ray instance."""

    url: str
    process: subprocess.Popen
    output_path: Path
    workdir: Path

    def client(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def ray_processes(self) -> list[psutil.Process]:
        """Every process the CLI started (Ray's GCS, raylet, dashboard, controller, proxy, replicas): its
        descendants, and whatever is left in its session once it has exited."""
        found = {}
        for process in psutil.process_iter():
            try:
                if process.pid != self.process.pid and os.getsid(process.pid) == self.process.pid:
                    found[process.pid] = process
            except (ProcessLookupError, PermissionError):
                continue
        try:
            found.update((child.pid, child) for child in psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        return list(found.values())


def launch_ray_sidecar(workdir: Path) -> RaySidecar:
    port = free_port()
    output = workdir / "serve-ray.out"
    process = subprocess.Popen(
        [sys.executable, "-m", "rerank_sidecar.cli", "serve", "--ray", "--replicas", str(REPLICAS),
         "--host", "127.0.0.1", "--port", str(port)],
        env=sidecar_env(workdir, **SETTINGS), cwd=workdir, stdout=output.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,  # its session holds every Ray process it starts, for the final clean-up
    )
    return RaySidecar(f"http://127.0.0.1:{port}", process, output, workdir)


def wait_ready(server: RaySidecar, ready_timeout: float = 240.0) -> None:
    """Until the CLI says every replica is up (Ray's proxy answers before the replicas do)."""
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            output = server.output_path.read_text()[-5000:]
            raise RuntimeError(f"serve --ray exited with {server.process.returncode}:\n{output}")
        if READY_LINE in server.output_path.read_text(errors="replace"):
            return
        time.sleep(0.5)
    stop_ray_sidecar(server)
    raise RuntimeError(f"serve --ray not ready within {ready_timeout} s:\n{server.output_path.read_text()[-5000:]}")


def stop_ray_sidecar(server: RaySidecar, timeout: float = 90.0) -> tuple[int, list[psutil.Process]]:
    """SIGTERM, then the exit code and the Ray processes still alive 30 s later (killed before returning)."""
    started = server.ray_processes()
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(10)
    _, alive = psutil.wait_procs(started, timeout=30)
    alive += [process for process in server.ray_processes() if process not in alive]
    for process in alive:
        process.kill()
    return server.process.returncode, alive


@dataclass
class RaySidecars:
    """The module's Ray sidecar, shared by its tests: started once, and started again for any test that comes
    after one that stopped it (`take`), so that the tests pass in any order."""

    tmp_path_factory: pytest.TempPathFactory
    current: RaySidecar | None = None
    """The sidecar the next test gets, once ready; None after a test took it."""
    launched: list[RaySidecar] = field(default_factory=list)
    """Every sidecar started, all stopped when the module ends."""

    def launch(self) -> RaySidecar:
        """Starts a sidecar, without waiting for it, unless one was started and not taken (a sidecar that died
        on its own is not replaced: `ready` reports it)."""
        if self.current is None:
            self.current = launch_ray_sidecar(self.tmp_path_factory.mktemp("ray"))
            self.launched.append(self.current)
        return self.current

    def ready(self) -> RaySidecar:
        server = self.launch()
        wait_ready(server)
        return server

    def take(self) -> RaySidecar:
        """A ready sidecar that the caller stops; the next test to need one starts its own."""
        server = self.ready()
        self.current = None
        return server

    def stop_all(self) -> None:
        for server in self.launched:
            stop_ray_sidecar(server)


@pytest.fixture(scope="module")
def ray_sidecars(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaySidecars]:
    sidecars = RaySidecars(tmp_path_factory)
    sidecars.launch()  # Ray boots while single_sidecar, which depends on this fixture, starts
    try:
        yield sidecars
    finally:
        sidecars.stop_all()


@pytest.fixture
def ray_sidecar(ray_sidecars: RaySidecars) -> RaySidecar:
    return ray_sidecars.ready()


@pytest.fixture(scope="module")
def single_sidecar(ray_sidecars: RaySidecars, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One plain sidecar on the Ray sidecar's settings. It depends on `ray_sidecars` so that Ray is already
    starting while it starts: tests list it before `ray_sidecar`."""
    workdir = tmp_path_factory.mktemp("single")
    server = start_server(workdir, sidecar_env(workdir, **SETTINGS))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def requests_(trec_dir: Path) -> list[tuple[str, dict]]:
    """(route, body) pairs covering every scoring route, from TREC DL 2020 queries and BM25 passages."""
    topics = load_benchmark(trec_dir).limited(max_topics=4, max_candidates=16).topics
    native = [("/rerank", {"query": t.query, "documents": [c.text for c in t.candidates]}) for t in topics]
    batch = ("/rerank/batch", {"groups": [body for _, body in native[:2]], "top_n": 3})
    cohere = [("/v2/rerank", {"model": "", "query": t.query, "documents": [{"text": c.text} for c in t.candidates],
                              "top_n": 5}) for t in topics[2:]]
    return [*native, batch, *cohere]


def _scores(route: str, answer: dict) -> list[list[float]]:
    """Scores and best-first order of an answer, whatever the route's shape."""
    if route == "/rerank":
        return [answer["scores"], [r["index"] for r in answer["results"]]]
    if route == "/rerank/batch":
        groups = answer["groups"]
        return [item for group in groups for item in (group["scores"], [r["index"] for r in group["results"]])]
    return [[r["relevance_score"] for r in answer["results"]], [r["index"] for r in answer["results"]]]


def _assert_same_answers(expected: dict, actual: dict, route: str) -> None:
    for want, got in zip(_scores(route, expected), _scores(route, actual), strict=True):
        assert len(want) == len(got)
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=route)


def test_every_route_answers_as_one_sidecar(
    single_sidecar: LiveServer, ray_sidecar: RaySidecar, requests_: list[tuple[str, dict]]
) -> None:
    with ray_sidecar.client() as ray_client, single_sidecar.client() as single_client:
        for route, body in requests_:
            expected, actual = single_client.post(route, json=body), ray_client.post(route, json=body)
            assert (expected.status_code, actual.status_code) == (200, 200), actual.text
            _assert_same_answers(expected.json(), actual.json(), route)
            assert len(actual.headers.get_list("x-request-id")) == 1
        # Same errors: status, type and message, field names and limits included.
        for method, route, body in [
            ("POST", "/rerank", {"query": "q"}),
            ("POST", "/rerank", {"query": "q", "documents": ["d"], "model": "not-served"}),
            ("POST", "/v2/rerank", {"model": "rerank-english-v9", "query": "q", "documents": ["d"]}),
            ("GET", "/no-such-route", None),
        ]:
            expected = single_client.request(method, route, json=body)
            actual = ray_client.request(method, route, json=body)
            assert 400 <= expected.status_code < 500
            assert (actual.status_code, actual.json()) == (expected.status_code, expected.json())


def test_health_names_the_replica_that_answered(single_sidecar: LiveServer, ray_sidecar: RaySidecar) -> None:
    pids: dict[str, int] = {}
    with ray_sidecar.client() as client:
        for _ in range(40):
            response = client.get("/health")
            health = response.json()
            assert response.status_code == 200 and health["status"] == "ready" and health["model_loaded"]
            assert health["replica"] == response.headers[REPLICA_HEADER]
            assert pids.setdefault(health["replica"], health["pid"]) == health["pid"]
            if len(pids) == REPLICAS:
                break
    assert len(pids) == REPLICAS and len(set(pids.values())) == REPLICAS
    assert ray_sidecar.process.pid not in pids.values()  # the model lives in the replicas, not in the CLI
    with single_sidecar.client() as client:
        assert "replica" not in client.get("/health").json()


def _scrape(client: httpx.Client) -> dict[str, str]:
    """Replica id -> its /metrics text, scraping until every replica has answered once."""
    scrapes: dict[str, str] = {}
    for _ in range(50):
        response = client.get("/metrics")
        assert response.status_code == 200
        replica = response.headers[REPLICA_HEADER]
        assert f'rerank_replica_info{{replica="{replica}"}} 1.0' in response.text
        scrapes[replica] = response.text
        if len(scrapes) == REPLICAS:
            return scrapes
    raise AssertionError(f"/metrics reached only {sorted(scrapes)}")


def _rerank_count(metrics_text: str) -> float:
    found = re.search(r'^rerank_requests_total\{route="/rerank",status="200"\} (\S+)$', metrics_text, re.M)
    return float(found.group(1)) if found else 0.0


def test_requests_spread_over_replicas_and_each_counts_its_own(ray_sidecar: RaySidecar) -> None:
    with ray_sidecar.client() as client:
        before = {replica: _rerank_count(text) for replica, text in _scrape(client).items()}
        served: Counter[str] = Counter()
        for index in range(12):
            response = client.post("/rerank", json={"query": f"q{index}", "documents": ["a", "b"]})
            assert response.status_code == 200
            served[response.headers[REPLICA_HEADER]] += 1
        after = {replica: _rerank_count(text) for replica, text in _scrape(client).items()}
    assert len(served) == REPLICAS, f"12 requests all went to {dict(served)}"
    assert {replica: after[replica] - before[replica] for replica in after} == {r: float(served[r]) for r in after}


async def _rerank_until_answered(client: httpx.AsyncClient, body: dict, deadline: float,
                                 answers: list[httpx.Response], refusals: list[httpx.Response]) -> httpx.Response:
    """Posts until a 200, honouring each 503's Retry-After, as a sidecar client does."""
    while True:
        response = await client.post("/rerank", json=body)
        if response.status_code != 503 or time.monotonic() > deadline:
            answers.append(response)
            return response
        refusals.append(response)
        await asyncio.sleep(float(response.headers["Retry-After"]))


async def _load_with_a_kill(url: str, bodies: list[dict], victim_replica: str, victim_pid: int,
                            concurrency: int) -> tuple[list[httpx.Response], list[httpx.Response]]:
    answers: list[httpx.Response] = []
    refusals: list[httpx.Response] = []
    pending = list(enumerate(bodies))
    results: dict[int, httpx.Response] = {}
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker() -> None:
            while pending:
                index, body = pending.pop()
                results[index] = await _rerank_until_answered(client, body, deadline, answers, refusals)

        async def killer() -> None:
            # Shortly after the victim's first answer: the clients it freed have sent new requests, which
            # Ray's router prefers to give the idle victim, so it dies holding some.
            while not any(a.headers.get(REPLICA_HEADER) == victim_replica for a in answers):
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            os.kill(victim_pid, signal.SIGKILL)

        await asyncio.gather(killer(), *(worker() for _ in range(concurrency)))
    return [results[index] for index in range(len(bodies))], refusals


def _healthy_replicas(client: httpx.Client) -> dict[str, int]:
    replicas: dict[str, int] = {}
    for _ in range(20):
        try:
            response = client.get("/health", timeout=5)
        except httpx.TransportError:
            continue
        if response.status_code == 200 and response.json()["status"] == "ready":
            replicas[response.json()["replica"]] = response.json()["pid"]
    return replicas


def test_a_replica_killed_mid_load_loses_no_request_and_comes_back(
    single_sidecar: LiveServer, ray_sidecar: RaySidecar, requests_: list[tuple[str, dict]]
) -> None:
    unique = [body for route, body in requests_ if route == "/rerank"]
    bodies = unique * 3
    with single_sidecar.client() as client:
        expected = {body["query"]: client.post("/rerank", json=body).json() for body in unique}
    with ray_sidecar.client() as client:
        before = _healthy_replicas(client)
    assert len(before) == REPLICAS
    victim_replica, victim_pid = sorted(before.items())[0]

    answers, refusals = asyncio.run(_load_with_a_kill(ray_sidecar.url, bodies, victim_replica, victim_pid, 6))

    assert not psutil.pid_exists(victim_pid) or psutil.Process(victim_pid).status() == psutil.STATUS_ZOMBIE
    assert [a.status_code for a in answers] == [200] * len(bodies), [(a.status_code, a.text) for a in answers]
    for body, answer in zip(bodies, answers, strict=True):
        _assert_same_answers(expected[body["query"]], answer.json(), "/rerank")
    # The requests the victim held when it died were answered 503 + Retry-After in the sidecar's shape
    # (not Ray's bare 500), and retried to a 200.
    served = Counter(a.headers[REPLICA_HEADER] for a in answers)
    assert refusals, f"no request was in flight on the killed replica; answers by replica: {dict(served)}"
    for refusal in refusals:
        assert refusal.headers["Retry-After"].isdigit()
        assert refusal.json()["error"]["type"] == "replica_unavailable"

    deadline = time.monotonic() + 120
    with ray_sidecar.client() as client:
        while (after := _healthy_replicas(client)).keys() & {victim_replica} or len(after) < REPLICAS:
            assert time.monotonic() < deadline, f"replicas after the kill: {after}"
            time.sleep(1)
    assert victim_pid not in after.values()


def test_sigterm_stops_ray_and_every_replica(ray_sidecars: RaySidecars) -> None:
    ray_sidecar = ray_sidecars.take()  # stopped here; a test after this one gets a fresh sidecar
    ray_processes = ray_sidecar.ray_processes()
    assert len(ray_processes) > REPLICAS  # GCS, raylet, controller, proxy and the replicas at least
    returncode, survivors = stop_ray_sidecar(ray_sidecar)
    assert returncode == 0, ray_sidecar.output_path.read_text()[-3000:]
    assert survivors == [], [process.info for process in survivors]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{ray_sidecar.url}/health", timeout=2)


# --- no Ray instance needed below ---


def test_replicas_fixed_or_autoscaled_with_their_resources(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = deployment_options(Settings(ray_min_replicas=3, ray_max_replicas=3, ray_replica_gpus=0.5))
    assert fixed["num_replicas"] == 3 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    scaled = deployment_options(Settings(ray_min_replicas=1, ray_max_replicas=4, ray_target_ongoing_requests=16,
                                         ray_replica_cpus=2))
    assert scaled["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16}
    assert "num_replicas" not in scaled and scaled["ray_actor_options"]["num_cpus"] == 2
    with pytest.raises(ValueError, match="RERANK_RAY_MIN_REPLICAS \\(5\\) exceeds RERANK_RAY_MAX_REPLICAS \\(2\\)"):
        deployment_options(Settings(ray_min_replicas=5, ray_max_replicas=2))
    for name in [name for name in os.environ if name.startswith("RERANK_")]:
        monkeypatch.delenv(name)
    built = build_app({"ray_min_replicas": "1", "ray_max_replicas": "3", "threads": "2"})
    deployment = built._bound_deployment  # what the Application was bound from (Ray has no public accessor)
    assert deployment.func_or_class is RerankReplica and deployment.name == APP_NAME
    # The replicas get the settings given, parsed, and nothing else (unset ones fall back to their defaults).
    assert deployment.init_args == ({"ray_min_replicas": 1, "ray_max_replicas": 3, "threads": 2},)
    autoscaling = deployment._deployment_config.autoscaling_config
    assert (autoscaling.min_replicas, autoscaling.max_replicas) == (1, 3)


def test_replica_threads_follow_its_cpus_and_it_logs_to_its_own_file(tmp_path: Path) -> None:
    configured = {"log_path": str(tmp_path / "requests.jsonl"), "ray_replica_cpus": 0.5}
    first = replica_settings(configured, local_rank=0)
    assert first.threads == 1 and first.log_path == tmp_path / "requests.replica-0.jsonl"
    assert replica_settings({**configured, "ray_replica_cpus": 3}, local_rank=1).threads == 3
    assert replica_settings({**configured, "threads": 2}, local_rank=1).log_path.name == "requests.replica-1.jsonl"
    assert replica_settings({**configured, "threads": 2}, local_rank=1).threads == 2


def test_replicas_without_ray_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["serve", "--replicas", "2"]) == 2
    assert "--replicas and --address need --ray" in capsys.readouterr().err


async def _through_proxy_middleware(inner) -> httpx.Response:
    transport = httpx.ASGITransport(app=ProxyErrorsMiddleware(inner))
    async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
        return await client.post("/rerank", json={}, headers={"x-request-id": "req-1"})


def test_proxy_answers_a_replica_that_never_answered_with_a_retryable_503() -> None:
    async def replica_died(scope, receive, send) -> None:
        return None  # Ray's proxy returns without a response when the replica's actor died

    response = asyncio.run(_through_proxy_middleware(replica_died))
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.headers["x-request-id"] == "req-1"
    assert response.json()["error"]["type"] == "replica_unavailable"


def test_proxy_puts_rays_own_errors_in_the_sidecar_shape() -> None:
    async def no_replica_ready(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"text/plain"), (b"x-request-id", b"req-1")]})
        await send({"type": "http.response.body", "body": b"Deployment is unavailable."})

    response = asyncio.run(_through_proxy_middleware(no_replica_ready))
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.headers["x-request-id"] == "req-1"
    assert response.json() == {"error": {"type": "replica_unavailable", "message": "Deployment is unavailable."}}


def test_proxy_passes_the_sidecars_own_answers_unchanged_but_one_request_id() -> None:
    body = json.dumps({"error": {"type": "validation_error", "message": "body.query: Field required"}}).encode()

    async def sidecar_answer(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 422, "headers": [
            (b"content-type", b"application/json"), (b"x-request-id", b"req-1"),
            (REPLICA_HEADER.lower().encode(), b"abc"), (b"x-request-id", b"req-1")]})
        await send({"type": "http.response.body", "body": body})

    response = asyncio.run(_through_proxy_middleware(sidecar_answer))
    assert response.status_code == 422 and response.content == body
    assert response.headers.get_list("x-request-id") == ["req-1"] and response.headers[REPLICA_HEADER] == "abc"
