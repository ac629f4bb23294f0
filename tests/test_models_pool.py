"""Several models in one sidecar: picked per request, loaded on first use, unloaded when idle or to make room.

Two tiny models at once, a cross-encoder and a Qwen3-Reranker on the real tokenizer, against
single-model sidecars of the same models; the pool's eviction and unload races in process, where
a gate holds a model busy deterministically.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from huggingface_hub import constants as hub_constants
from conftest import Launcher, LiveServer, server_processes, sidecar_env, start_server
from model_factory import TinyQwen3Cache, build_tiny_cross_encoder
from prometheus_client.parser import text_string_to_metric_families

from rerank_sidecar.config import ModelSpec, Settings
from rerank_sidecar.engine import engine as engine_module
from rerank_sidecar.engine.engine import INLINE_TOKENIZE_CHARS, RerankJob
from rerank_sidecar.engine.pool import ModelPool
from rerank_sidecar.launcher import ExitCode
from rerank_sidecar.metrics import Metrics

QUERY = "What fruit is red and crunchy?"
DOCUMENTS = [
    "An apple is a red, crunchy fruit.",
    "Bananas are long and yellow.",
    "Quantum chromodynamics describes the strong interaction.",
    "Strawberries are red but soft.",
]
KEEP_ALIVE_S = 1.5


@pytest.fixture(scope="module")
def second_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A third model for the budget: another tiny cross-encoder, other weights."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-ce-2"), seed=7)


def model_list(cross_encoder: Path, qwen3: TinyQwen3Cache, third: Path | None = None) -> list[dict]:
    models = [
        {"name": "ce", "model": str(cross_encoder), "aliases": ["rerank-v3.5"], "backend": "torch"},
        {"name": "qwen", "model": qwen3.repo_id, "revision": qwen3.sha, "max_length": 128},
    ]
    if third is not None:
        models.append({"name": "ce-2", "model": str(third), "backend": "torch"})
    return models


@pytest.fixture(scope="module")
def sidecars(
    tiny_cross_encoder_dir: Path, tiny_qwen3_cache: TinyQwen3Cache, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """One sidecar serving both models (keep-alive on), and one single-model sidecar of each."""
    servers: dict[str, LiveServer] = {}
    configs = {
        "both": {"models": json.dumps(model_list(tiny_cross_encoder_dir, tiny_qwen3_cache)),
                 "keep_alive_s": str(KEEP_ALIVE_S)},
        "ce": {"model_name": str(tiny_cross_encoder_dir), "backend": "torch"},
        "qwen": {"model_name": tiny_qwen3_cache.repo_id, "model_revision": tiny_qwen3_cache.sha, "max_length": "128"},
    }
    try:
        for name, settings in configs.items():
            workdir = tmp_path_factory.mktemp(f"pool-{name}")
            servers[name] = start_server(workdir, sidecar_env(workdir, **settings) | tiny_qwen3_cache.env)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def rerank(server: LiveServer, model: str | None, route: str = "/rerank") -> httpx.Response:
    body = {"query": QUERY, "documents": DOCUMENTS}
    if model is not None:
        body["model"] = model
    if route == "/rerank":
        body["raw_scores"] = True
    with server.client() as client:
        return client.post(route, json=body)


def health_of(server: LiveServer) -> dict[str, dict]:
    with server.client() as client:
        return {model["name"]: model for model in client.get("/health").json()["models"]}


def test_requests_routed_by_name_equal_single_model_sidecars(sidecars: dict[str, LiveServer]) -> None:
    both = sidecars["both"]
    for name, alias in (("ce", "rerank-v3.5"), ("qwen", None)):
        single = rerank(sidecars[name], None).json()
        for requested in filter(None, (name, alias)):
            routed = rerank(both, requested)
            assert routed.status_code == 200, routed.text
            assert routed.json()["scores"] == pytest.approx(single["scores"], abs=1e-6)
            assert routed.json()["model"] == single["model"]
    default = rerank(both, None).json()  # no model: the first listed
    assert default["scores"] == pytest.approx(rerank(sidecars["ce"], None).json()["scores"], abs=1e-6)
    cohere = rerank(both, "qwen", route="/v2/rerank").json()
    assert cohere["model"] == rerank(sidecars["qwen"], None).json()["model"]


def test_concurrent_requests_to_both_models_are_all_answered_correctly(sidecars: dict[str, LiveServer]) -> None:
    expected = {name: rerank(sidecars[name], None).json()["scores"] for name in ("ce", "qwen")}
    asked = ["ce", "qwen"] * 12
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda model: rerank(sidecars["both"], model), asked))
    assert [answer.status_code for answer in answers] == [200] * len(asked)
    for model, answer in zip(asked, answers, strict=True):
        assert answer.json()["scores"] == pytest.approx(expected[model], abs=1e-6)
    with sidecars["both"].client() as client:
        metrics = client.get("/metrics").text
    scored = {sample.labels["model"]: sample.value for family in text_string_to_metric_families(metrics)
              for sample in family.samples if sample.name == "rerank_pairs_scored_total"}
    assert scored["ce"] >= 12 * len(DOCUMENTS) and scored["qwen"] >= 12 * len(DOCUMENTS)


def test_an_unknown_model_is_a_400_listing_the_served_names(sidecars: dict[str, LiveServer]) -> None:
    for route in ("/rerank", "/v1/rerank"):
        refused = rerank(sidecars["both"], "gpt-4", route=route)
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["type"] == "model_not_served"
        assert all(name in error["message"] for name in ("'gpt-4'", "'ce'", "'qwen'", "rerank-v3.5"))
    with sidecars["both"].client() as client:
        refused = client.post("/warmup", params={"model": "/etc/some-other-model"})
        listing = client.get("/v1/models").json()
    assert refused.status_code == 400
    assert [card["id"] for card in listing["data"]][:3] == ["ce", "rerank-v3.5", "qwen"]
    assert {card["root"] for card in listing["data"]} == {"ce", "qwen"}


def test_keep_alive_unloads_an_idle_model_and_the_next_request_reloads_it(sidecars: dict[str, LiveServer]) -> None:
    both = sidecars["both"]
    expected = rerank(sidecars["qwen"], None).json()["scores"]
    assert rerank(both, "qwen").status_code == 200
    assert health_of(both)["qwen"]["loaded"] is True and health_of(both)["qwen"]["memory_bytes"] > 0
    deadline = time.monotonic() + KEEP_ALIVE_S + 10
    while health_of(both)["qwen"]["status"] != "idle" and time.monotonic() < deadline:  # ready, unloading, idle
        time.sleep(0.2)
    unloaded = health_of(both)["qwen"]
    assert unloaded["status"] == "idle" and not unloaded["loaded"] and "memory_bytes" not in unloaded
    assert unloaded["idle_s"] >= KEEP_ALIVE_S
    again = rerank(both, "qwen")
    assert again.status_code == 200 and again.json()["scores"] == pytest.approx(expected, abs=1e-6)
    assert health_of(both)["qwen"]["loaded"] is True
    with both.client() as client:
        metrics = client.get("/metrics").text
    unloads = {sample.labels["model"]: sample.value for family in text_string_to_metric_families(metrics)
               for sample in family.samples if sample.name == "rerank_model_unloads_total"}
    assert unloads["qwen"] >= 1


def pool_settings(tmp_path: Path, cross_encoder: Path, qwen3: TinyQwen3Cache, third: Path, **extra: object) -> Settings:
    specs = [ModelSpec(**entry) for entry in model_list(cross_encoder, qwen3, third)]
    return Settings(models=specs, threads=1, log_path=tmp_path / "log.jsonl", **extra)


def test_budget_evicts_the_least_recently_used_idle_model_never_a_busy_one(
    tiny_cross_encoder_dir: Path, tiny_qwen3_cache: TinyQwen3Cache, second_cross_encoder_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tiny_qwen3_cache.hub_cache))
    settings = pool_settings(tmp_path, tiny_cross_encoder_dir, tiny_qwen3_cache, second_cross_encoder_dir,
                             max_loaded_models=2)
    pool = ModelPool(settings, Metrics())
    ce, qwen, third = (pool.pick(name).engine for name in ("ce", "qwen", "ce-2"))
    job = RerankJob(QUERY, DOCUMENTS)

    async def run() -> None:
        await ce.rerank(job)
        await qwen.rerank(job)  # ce is now the least recently used
        await third.rerank(job)  # a third model: ce, idle and least recent, makes room
        assert (ce.state, qwen.state, third.state) == ("idle", "ready", "ready")

        # qwen is the least recently used now, but busy: a request is held while it tokenizes (outside the
        # shared compute, which the other models need meanwhile).
        gate, entered = threading.Event(), threading.Event()
        encode = qwen.scorer.encode

        def held(*args):  # type: ignore[no-untyped-def]
            entered.set()
            gate.wait(30)
            return encode(*args)

        monkeypatch.setattr(qwen.scorer, "encode", held)
        # Long enough to be tokenized in a thread (a short request is tokenized on the event loop).
        repeat = INLINE_TOKENIZE_CHARS // sum(map(len, DOCUMENTS)) + 1
        busy = asyncio.create_task(qwen.rerank(RerankJob(QUERY, [document * repeat for document in DOCUMENTS])))
        await asyncio.to_thread(entered.wait, 30)
        await third.rerank(job)  # used: now qwen is least recent
        await ce.rerank(job)  # needs room: qwen is busy, so third goes
        assert (ce.state, qwen.state, third.state) == ("ready", "ready", "idle")
        gate.set()
        assert len((await busy).raw) == len(DOCUMENTS)

    try:
        asyncio.run(run())
    finally:
        pool.stop()


def test_a_request_arriving_during_an_unload_waits_and_succeeds(
    tiny_cross_encoder_dir: Path, tiny_qwen3_cache: TinyQwen3Cache, second_cross_encoder_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = ModelPool(pool_settings(tmp_path, tiny_cross_encoder_dir, tiny_qwen3_cache, second_cross_encoder_dir),
                     Metrics())
    engine = pool.pick("ce").engine
    release = engine_module.release_model

    def slow_release(*args: object) -> None:
        time.sleep(0.5)  # long enough for the request below to arrive mid-unload
        release(*args)

    monkeypatch.setattr(engine_module, "release_model", slow_release)

    async def run() -> tuple:
        first = await engine.rerank(RerankJob(QUERY, DOCUMENTS))
        released = weakref.ref(engine.scorer)
        unloading = asyncio.create_task(engine.unload())
        await asyncio.sleep(0.1)
        state_meanwhile = engine.state
        second = await engine.rerank(RerankJob(QUERY, DOCUMENTS))
        return first, second, state_meanwhile, await unloading, released

    try:
        first, second, state_meanwhile, unloaded, released = asyncio.run(run())
    finally:
        pool.stop()
    assert state_meanwhile == "unloading" and unloaded is True
    assert released() is None, "the unloaded model is still referenced, so its memory cannot go back"
    assert second.raw.tolist() == pytest.approx(first.raw.tolist(), abs=1e-6)
    assert engine.state == "ready"  # loaded again for the request


def test_ensure_for_the_second_listed_model_reuses_the_running_sidecar(
    tiny_cross_encoder_dir: Path, tiny_qwen3_cache: TinyQwen3Cache, tmp_path: Path, launcher: Launcher
) -> None:
    launcher.env.update(RERANK_MODELS=json.dumps(model_list(tiny_cross_encoder_dir, tiny_qwen3_cache)),
                        **tiny_qwen3_cache.env)
    first = launcher.ensure()  # the first listed model, started here
    assert first["started"] is True and first["name"] == "ce"
    done = launcher.run("ensure", "--model", "qwen")
    assert done.returncode == ExitCode.OK, done.stderr
    second = json.loads(done.stdout)
    assert (second["pid"], second["started"], second["name"]) == (first["pid"], False, "qwen")
    assert second["revision"] == tiny_qwen3_cache.sha
    # A launcher configured for the Qwen3 model alone is served by the same process.
    alone = launcher.run("ensure", RERANK_MODELS="[]", RERANK_MODEL_NAME=tiny_qwen3_cache.repo_id,
                         RERANK_MODEL_REVISION=tiny_qwen3_cache.sha)
    assert alone.returncode == ExitCode.OK, alone.stderr
    assert json.loads(alone.stdout)["pid"] == first["pid"]
    assert [process.pid for process in server_processes(launcher.port)] == [first["pid"]]
    with httpx.Client(base_url=launcher.url) as client:
        loaded = {model["name"]: model["loaded"] for model in client.get("/health").json()["models"]}
    assert loaded == {"ce": True, "qwen": True}
    # A model the sidecar does not list is refused, naming both.
    other = launcher.run("ensure", RERANK_MODELS="[]", RERANK_MODEL_NAME=str(tmp_path / "another-model"))
    assert other.returncode == ExitCode.MODEL_MISMATCH
    assert "another-model" in other.stderr and "'qwen'" in other.stderr


def test_two_models_take_turns_on_one_compute(
    tiny_cross_encoder_dir: Path, tiny_qwen3_cache: TinyQwen3Cache, second_cross_encoder_dir: Path,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tiny_qwen3_cache.hub_cache))
    # Two pairs a batch, so each request is many forward passes and the models' passes can interleave.
    pool = ModelPool(pool_settings(tmp_path, tiny_cross_encoder_dir, tiny_qwen3_cache, second_cross_encoder_dir,
                                   max_batch_pairs=2), Metrics())
    passes: list[tuple[str, float, float]] = []

    def recorded(name: str, score_batch):  # type: ignore[no-untyped-def]
        def timed(pairs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            scores = score_batch(pairs)
            passes.append((name, started, time.perf_counter()))
            return scores
        return timed

    async def run() -> None:
        for name in ("ce", "qwen"):
            engine = pool.pick(name).engine
            await engine.ensure_loaded()
            monkeypatch.setattr(engine.scorer, "score_batch", recorded(name, engine.scorer.score_batch))
        jobs = [pool.pick(name).engine.rerank(RerankJob(QUERY, DOCUMENTS * 4)) for name in ("ce", "qwen") * 3]
        await asyncio.gather(*jobs)

    try:
        asyncio.run(run())
    finally:
        pool.stop()
    passes.sort(key=lambda entry: entry[1])
    assert len(passes) >= 2 * 3 * len(DOCUMENTS) * 4 // 2
    for (_, _, ended), (_, started, _) in zip(passes, passes[1:]):
        assert started >= ended, "two forward passes ran at once"
    switches = sum(first != second for (first, _, _), (second, _, _) in zip(passes, passes[1:]))
    assert switches >= 3, [name for name, _, _ in passes]
