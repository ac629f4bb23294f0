"""Which backend scores which model: detection from config.json, and one loader line per family."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from typing import Literal

from ..config import BUILTIN_MODEL_ID, Settings
from .base import Family, Scorer
from .bi_encoder import BUILTIN_CALIBRATION, BiEncoderScorer
from .cross_encoder import CrossEncoderScorer
from .device import pick_device
from .resolve import ModelNotAvailable, ResolvedModel, resolve_model

# Models whose int8 NDCG@10 on TREC DL 2020 is held within 0.005 of fp32 by the test suite
# (tests/test_onnx.py); RERANK_QUANTIZE=auto serves these in int8. SKILL.md says how to measure others.
INT8_MEASURED_MODELS = frozenset({BUILTIN_MODEL_ID})

Loader = Callable[[ResolvedModel, Settings], Scorer]
Backend = Literal["torch", "onnx"]


def _load_qwen3(resolved: ResolvedModel, settings: Settings) -> Scorer:
    from .qwen3 import Qwen3RerankerScorer

    return Qwen3RerankerScorer(resolved, settings)


def _load_onnx_cross_encoder(resolved: ResolvedModel, settings: Settings) -> Scorer:
    from .onnx import OnnxCrossEncoderScorer

    return OnnxCrossEncoderScorer(resolved, settings)


def _load_onnx_bi_encoder(resolved: ResolvedModel, settings: Settings) -> Scorer:
    from .onnx import OnnxBiEncoderScorer

    return OnnxBiEncoderScorer(resolved, settings, BUILTIN_CALIBRATION)


# One line per family and backend; Qwen3-Reranker has no onnx line (models/onnx.py says why).
LOADERS: dict[tuple[Family, Backend], Loader] = {
    ("cross-encoder", "torch"): CrossEncoderScorer,
    ("cross-encoder", "onnx"): _load_onnx_cross_encoder,
    ("qwen3", "torch"): _load_qwen3,
    ("bi-encoder", "torch"): lambda resolved, settings: BiEncoderScorer(resolved, settings, BUILTIN_CALIBRATION),
    ("bi-encoder", "onnx"): _load_onnx_bi_encoder,
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
    backend = pick_backend(settings, family)
    qwen3_on_cpu = family == "qwen3" and pick_device(settings.device).type == "cpu"
    if settings.quantize == "int8" and backend != "onnx" and not qwen3_on_cpu:
        raise ValueError(
            f"RERANK_QUANTIZE=int8 needs the onnx backend (or a qwen3 model on the CPU), but the {family} model "
            f"runs on {backend} here; set RERANK_QUANTIZE=none, or RERANK_BACKEND=onnx with RERANK_DEVICE=cpu"
        )
    quantize = pick_quantize(settings, backend)
    return LOADERS[(family, backend)](resolved, settings.model_copy(update={"quantize": quantize}))


def pick_quantize(settings: Settings, backend: Backend) -> Literal["none", "int8"]:
    """auto: int8 where its ranking quality has been measured (INT8_MEASURED_MODELS, on onnx), none elsewhere."""
    if settings.quantize != "auto":
        return settings.quantize
    measured = settings.served_model_id in INT8_MEASURED_MODELS
    return "int8" if measured and backend == "onnx" else "none"


def pick_backend(settings: Settings, family: Family) -> Backend:
    """auto: onnx on the CPU where onnxruntime is installed and the family has an onnx loader; torch otherwise."""
    if settings.backend == "auto":
        on_cpu = pick_device(settings.device).type == "cpu"
        has_onnx = (family, "onnx") in LOADERS and importlib.util.find_spec("onnxruntime") is not None
        return "onnx" if on_cpu and has_onnx else "torch"
    if (family, settings.backend) not in LOADERS:
        raise ValueError(
            f"RERANK_BACKEND={settings.backend} does not serve the {family} family; set RERANK_BACKEND=torch or auto"
        )
    return settings.backend
