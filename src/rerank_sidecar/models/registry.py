"""Which family scores which model: the one list of families, detection from the model's files, and loading.

A family is one file in models/ that defines `FAMILY` (a `FamilyEntry`: its detector, one loader per
runtime, its pair payload) and one line in `FAMILIES`, which names it. RERANK_MODEL_FAMILY, the
`family` of a RERANK_MODELS entry and /health's `family` take these names.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from dataclasses import replace
from typing import Literal

from ..config import BUILTIN_MODEL_ID, Settings
from .base import Backend, FamilyEntry, ModelFiles, Scorer
from .resolve import ModelNotAvailable, ResolvedModel, resolve_model

# One line per family: its name, and the module that defines its FAMILY. Detection asks them in this order.
# The modules are imported on first use, so config.py can check a family name here without loading torch.
FAMILIES: dict[str, str] = {
    "cross-encoder": ".cross_encoder",
    "qwen3": ".qwen3",
    "qwen3-embedding": ".qwen3_embedding",
    "bi-encoder": ".bi_encoder",
}

# Models whose int8 NDCG@10 on TREC DL 2020 is held within 0.005 of fp32 by the test suite
# (tests/test_onnx.py); RERANK_QUANTIZE=auto serves these in int8. SKILL.md says how to measure others.
INT8_MEASURED_MODELS = frozenset({BUILTIN_MODEL_ID})


def family(name: str) -> FamilyEntry:
    """The entry of the family `name`, from the module its line names."""
    return importlib.import_module(FAMILIES[name], __package__).FAMILY


def detect_family(resolved: ResolvedModel) -> str:
    """The name of the first family whose detector recognises the model's files."""
    config_path = resolved.path / "config.json"
    try:
        files = ModelFiles(resolved.path, json.loads(config_path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelNotAvailable(f"cannot read {config_path}: {exc}") from exc
    for name in FAMILIES:
        if family(name).detect(files):
            return name
    detectors = "; ".join(f"{name}: {family(name).detects}" for name in FAMILIES)
    raise ModelNotAvailable(
        f"{resolved.model_id} (revision {resolved.revision}) has architectures {files.architectures or 'unset'} "
        f"and model_type {files.config.get('model_type', 'unset')}, which no family recognises ({detectors}); "
        f"if it is one of them, set RERANK_MODEL_FAMILY (or the `family` of its RERANK_MODELS entry) to its name"
    )


def load_scorer(settings: Settings) -> Scorer:
    """Resolves the configured model on disk and builds its family's scorer on the runtime picked for it."""
    resolved = resolve_model(settings)
    name = detect_family(resolved) if settings.model_family == "auto" else settings.model_family
    backend = pick_backend(settings, name)
    if settings.quantize == "int8" and backend != "onnx" and not (family(name).int8_on_torch_cpu and _on_cpu(settings)):
        quantizing_torch = ", ".join(other for other in FAMILIES if family(other).int8_on_torch_cpu)
        raise ValueError(
            f"RERANK_QUANTIZE=int8 needs the onnx backend (or, for {quantizing_torch}, torch on the CPU), but the "
            f"{name} model runs on {backend} here; set RERANK_QUANTIZE=none, or RERANK_BACKEND=onnx with "
            "RERANK_DEVICE=cpu"
        )
    chosen = settings.model_copy(update={"model_family": name, "quantize": pick_quantize(settings, backend)})
    scorer = family(name).loaders[backend](resolved, chosen)
    scorer.info = replace(scorer.info, tasks=served_tasks(settings, name))
    return scorer


def served_tasks(settings: Settings, name: str) -> tuple[str, ...]:
    """What the model of family `name` serves: RERANK_MODEL_TASKS where set, else everything its family does.

    A task the family cannot do is refused here, so a listed model never claims what its scorer lacks.
    """
    can = family(name).tasks
    if not settings.tasks:
        return tuple(task for task in ("rerank", "embed") if task in can)
    lacking = [task for task in settings.tasks if task not in can]
    if lacking:
        raise ValueError(
            f"{settings.served_model_id} is a {name} model, which cannot {' or '.join(lacking)} "
            f"(it serves {', '.join(sorted(can))}); remove {', '.join(lacking)} from its tasks"
        )
    return settings.tasks


def detect_tasks(settings: Settings) -> tuple[str, ...]:
    """`served_tasks` of the configured model without loading it: its family from the settings or its files."""
    if settings.model_family != "auto":
        return served_tasks(settings, settings.model_family)
    return served_tasks(settings, detect_family(resolve_model(settings)))


def pick_quantize(settings: Settings, backend: Backend) -> Literal["none", "int8"]:
    """auto: int8 on the onnx backend for the models in INT8_MEASURED_MODELS, none elsewhere; else as set."""
    if settings.quantize != "auto":
        return settings.quantize
    measured = settings.served_model_id in INT8_MEASURED_MODELS
    return "int8" if measured and backend == "onnx" else "none"


def pick_backend(settings: Settings, name: str) -> Backend:
    """auto: onnx on the CPU where onnxruntime is installed and the family has an onnx loader; torch otherwise."""
    loaders = family(name).loaders
    if settings.backend == "auto":
        has_onnx = "onnx" in loaders and importlib.util.find_spec("onnxruntime") is not None
        return "onnx" if has_onnx and _on_cpu(settings) else "torch"
    if settings.backend not in loaders:
        raise ValueError(
            f"RERANK_BACKEND={settings.backend} does not serve the {name} family; set RERANK_BACKEND=torch or auto"
        )
    return settings.backend


def _on_cpu(settings: Settings) -> bool:
    from .device import pick_device  # torch: imported only once a model is being loaded

    return pick_device(settings.device).type == "cpu"
