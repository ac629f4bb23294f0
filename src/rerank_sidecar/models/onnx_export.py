"""Exports a transformer to ONNX once, rewrites it to int8 on request, and caches both files.

A cache entry is a directory `<cache_dir>/onnx/<model>/<graph>-<quantize>-<key>/` holding
`model.onnx` (plus external weight files for models past protobuf's 2 GB) and `build.json`,
a manifest of every file's size and sha256. The key hashes everything that shapes the file:
model id and revision, graph, quantization, exporter, opset and library versions; a new
release of any of them gets a fresh export instead of a stale file.

Concurrent starts build once: a file lock serializes them, and each build is written into a
temporary directory that is renamed into place whole, so no reader ever sees half an entry.
An entry whose files do not match its manifest (truncated, overwritten) is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import torch
from filelock import FileLock

from .resolve import ResolvedModel

logger = logging.getLogger(__name__)

Graph = Literal["sequence-classification", "feature-extraction"]
Quantize = Literal["none", "int8"]

# The TorchScript exporter (dynamo=False): the dynamo exporter needs onnxscript, which is not a dependency.
EXPORTER = "torch.onnx.export(dynamo=False)"
# Opset 17 has LayerNormalization as one op; onnxruntime's CPU kernels cover it fully.
OPSET = 17
# Bump when the export recipe changes in a way the versions below do not capture.
RECIPE = 5
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "build.json"
# Graph outputs by graph kind: the classifier's logits, or the token states the pooling reads.
GRAPH_OUTPUT: dict[Graph, str] = {"sequence-classification": "logits", "feature-extraction": "last_hidden_state"}


@dataclass(frozen=True, slots=True)
class ExportSpec:
    """Which ONNX file a scorer needs."""

    model: ResolvedModel
    """The model on disk and its revision."""
    graph: Graph
    """sequence-classification (cross-encoders: logits) or feature-extraction (bi-encoders: token states)."""
    quantize: Quantize
    """none: the fp32 export; int8: its per-token int8 rewrite (onnx_int8)."""

    def recipe(self) -> dict[str, str]:
        """Everything that shapes the file; its hash names the cache entry and `build.json` records it."""
        return {
            "model": self.model.model_id,
            "revision": self.model.revision,
            "graph": self.graph,
            "quantize": self.quantize,
            "exporter": EXPORTER,
            "opset": str(OPSET),
            "recipe": str(RECIPE),
            "torch": version("torch"),
            "transformers": version("transformers"),
            "onnx": version("onnx"),
            "onnxruntime": version("onnxruntime"),
        }

    def directory(self, cache_dir: Path) -> Path:
        """The cache entry's directory."""
        key = hashlib.sha256(json.dumps(self.recipe(), sort_keys=True).encode()).hexdigest()[:16]
        model_slug = re.sub(r"[^A-Za-z0-9._-]+", "-", self.model.model_id).strip("-") or "model"
        return cache_dir / "onnx" / model_slug / f"{self.graph}-{self.quantize}-{key}"


@dataclass(frozen=True, slots=True)
class OnnxBuild:
    """The ONNX file a session loads, and what it cost to get it."""

    path: Path
    """The model.onnx file."""
    cache_hit: bool
    """True when a valid file was already cached; False when this call exported or quantized it."""
    build_s: float
    """Seconds this call spent exporting and quantizing (0 on a cache hit)."""


def ensure_onnx(spec: ExportSpec, cache_dir: Path) -> OnnxBuild:
    """The cached ONNX file for `spec`, built first when it is missing or does not match its manifest."""
    entry = spec.directory(cache_dir)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(entry.with_name(entry.name + ".lock")):
        if entry_is_valid(entry):
            return OnnxBuild(entry / MODEL_FILE, cache_hit=True, build_s=0.0)
        if entry.exists():
            logger.warning("ONNX cache entry %s does not match its manifest; rebuilding it", entry)
        started = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        try:
            _build(spec, staging / MODEL_FILE, cache_dir)
            _write_manifest(staging, spec)
            if entry.exists():
                shutil.rmtree(entry)
            os.rename(staging, entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return OnnxBuild(entry / MODEL_FILE, cache_hit=False, build_s=time.perf_counter() - started)


def entry_is_valid(entry: Path) -> bool:
    """Whether every file the manifest lists is present with its recorded size and sha256."""
    try:
        files = json.loads((entry / MANIFEST_FILE).read_text())["files"]
        return (entry / MODEL_FILE).is_file() and all(
            (entry / name).stat().st_size == meta["size"] and _sha256(entry / name) == meta["sha256"]
            for name, meta in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _write_manifest(staging: Path, spec: ExportSpec) -> None:
    files = {
        item.name: {"size": item.stat().st_size, "sha256": _sha256(item)} for item in sorted(staging.iterdir())
    }
    (staging / MANIFEST_FILE).write_text(json.dumps({"recipe": spec.recipe(), "files": files}, indent=2))


def _build(spec: ExportSpec, output: Path, cache_dir: Path) -> None:
    if spec.quantize == "int8":
        fp32 = ensure_onnx(ExportSpec(spec.model, spec.graph, "none"), cache_dir)
        quantize_int8(fp32.path, output)
    else:
        export_transformer(spec.model.path, spec.graph, output)


def export_transformer(model_dir: Path, graph: Graph, output: Path) -> None:
    """Exports the model's fp32 forward pass with dynamic batch and sequence axes."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    model_class = AutoModelForSequenceClassification if graph == "sequence-classification" else AutoModel
    # Eager attention traces to the MatMul-Softmax pattern that onnxruntime fuses into one Attention op.
    model = model_class.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    input_names = _input_names(graph, tokenizer.model_input_names)
    # Two examples of different lengths, so the traced graph pads and masks like real batches.
    if graph == "sequence-classification":
        example = tokenizer(["a query", "another query"], ["a document", "a longer second document"], padding=True)
    else:
        example = tokenizer(["a document", "a longer second document"], padding=True)
    args = tuple(torch.tensor(example[name]) for name in input_names)
    output_name = GRAPH_OUTPUT[graph]
    output_axes = {0: "batch", 1: "sequence"} if graph == "feature-extraction" else {0: "batch"}
    # The tracer warns about Python branches in transformers' mask code; they hold for every batch
    # and length (tests/test_onnx.py checks other shapes against torch), so the warnings are noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _NamedForward(model, input_names, output_name).eval(),
            args,
            str(output),
            dynamo=False,
            input_names=input_names,
            output_names=[output_name],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in input_names} | {output_name: output_axes},
            opset_version=OPSET,
            do_constant_folding=True,
        )


def _input_names(graph: Graph, tokenizer_inputs: list[str]) -> list[str]:
    """Cross-encoders take what their tokenizer gives (segment ids for BERT, none for XLM-R);
    the bi-encoder scorer pads ids and mask only, as its torch backend does."""
    if graph == "feature-extraction":
        return ["input_ids", "attention_mask"]
    return [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in tokenizer_inputs]


def quantize_int8(fp32: Path, output: Path) -> None:
    """int8 weights, activations quantized one token at a time: scores independent of batch-mates (onnx_int8)."""
    from .onnx_int8 import quantize_per_token

    large = sum(item.stat().st_size for item in fp32.parent.iterdir()) >= 2**31 - 2**26
    quantize_per_token(fp32, output, external_data=large)


class _NamedForward(torch.nn.Module):
    """Positional inputs in, one named output out: the call signature torch.onnx.export traces."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output_name: str) -> None:
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output_name = output_name

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model(**dict(zip(self.input_names, inputs, strict=True))), self.output_name)
