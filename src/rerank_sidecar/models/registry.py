"""Which backend scores which model: detection from config.json, and one loader line per family."""

from __future__ import annotations

import json
from collections.abc import Callable

from ..config import Settings
from .base import Family, Scorer
from .bi_encoder import BUILTIN_CALIBRATION, BiEncoderScorer
from .cross_encoder import CrossEncoderScorer
from .resolve import ModelNotAvailable, ResolvedModel, resolve_model

Loader = Callable[[ResolvedModel, Settings], Scorer]


def _load_qwen3(resolved: ResolvedModel, settings: Settings) -> Scorer:
    from .qwen3 import Qwen3RerankerScorer

    return Qwen3RerankerScorer(resolved, settings)


LOADERS: dict[Family, Loader] = {
    "cross-encoder": CrossEncoderScorer,
    "qwen3": _load_qwen3,
    "bi-encoder": lambda resolved, settings: BiEncoderScorer(resolved, settings, BUILTIN_CALIBRATION),
}


def detect_family(resolved: ResolvedModel) -> Family:
    """Reads the family off the model's config: classification head, causal LM, or sentence embedder."""
    config_path = resolved.path / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotAvailable(f"cannot read {config_path}: {exc}") from exc
    architectures = config.get("architectures") or []
    if any(arch.endswith("ForSequenceClassification") for arch in architectures):
        return "cross-encoder"
    if any(arch.endswith("ForCausalLM") for arch in architectures):
        return "qwen3"
    if (resolved.path / "modules.json").is_file():
        return "bi-encoder"
    raise ModelNotAvailable(
        f"{resolved.model_id} (revision {resolved.revision}) has architectures {architectures or 'unset'}, "
        "which no backend serves; set RERANK_MODEL_FAMILY to cross-encoder, qwen3 or bi-encoder if it is one of them"
    )


def load_scorer(settings: Settings) -> Scorer:
    """Resolves the configured model on disk and builds its family's scorer."""
    resolved = resolve_model(settings)
    family = detect_family(resolved) if settings.model_family == "auto" else settings.model_family
    return LOADERS[family](resolved, settings)
