"""ONNX Runtime backend on the CPU: the cross-encoder and bi-encoder families, fp32 or dynamic int8.

Each scorer subclasses its family's torch scorer and keeps its tokenization (encode, pad, query
fitting, chunk windows) unchanged; only the forward pass moves to an onnxruntime session over a
file that `onnx_export` exported once and cached. The torch weights are loaded only to export,
never held while serving.

Qwen3-Reranker stays on torch (the registry has no onnx line for it), for four reasons:
- No real Qwen3-Reranker weights are on disk here, only tiny random test models, so an ONNX or
  int8 Qwen3 could not be held to the rule every backend here meets: NDCG@10 on TREC DL 2020
  within 0.01 of torch fp32.
- Its fp32 export is past protobuf's 2 GB limit already at 0.6B parameters (16-32 GB for 4B/8B),
  a second copy of the model on disk and a long export on the first start.
- Where it is practical, on a GPU, this onnxruntime build has no GPU provider; torch fp16/bf16 is
  the runtime there.
- On the CPU a 0.6B decoder costs dozens of times MiniLM-L6's compute per pair; a constant-factor
  runtime gain does not change which model a CPU user should pick.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import onnxruntime
import torch
from transformers import AutoConfig

from ..config import Settings
from .base import Calibration, EncodedPair, Family, ScorerInfo, pad_rows
from .bi_encoder import BiEncoderScorer, mean_pooled
from .cross_encoder import CrossEncoderScorer
from .device import inference_threads
from .onnx_export import ExportSpec, Graph, Quantize, ensure_onnx
from .resolve import ResolvedModel


class OnnxSession:
    """One onnxruntime CPU session over the cached export of a model, and how it was obtained."""

    def __init__(self, resolved: ResolvedModel, graph: Graph, settings: Settings) -> None:
        if settings.device not in ("auto", "cpu"):
            raise ValueError(
                f"RERANK_BACKEND=onnx runs on the CPU only, but RERANK_DEVICE={settings.device}; "
                "use RERANK_BACKEND=torch (or auto) for a GPU"
            )
        self.quantize: Quantize = settings.quantize
        self.threads = inference_threads(settings.threads)
        self.build = ensure_onnx(ExportSpec(resolved, graph, self.quantize), settings.cache_dir)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        # One batch at a time runs on the engine's worker thread: no parallelism between operators.
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: the sidecar shares the CPU with the processes
        # it serves, and on a busy 2-core machine spinning was no faster, only hungrier.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        started = time.perf_counter()
        self.session = onnxruntime.InferenceSession(
            str(self.build.path), options, providers=["CPUExecutionProvider"]
        )
        self.session_s = time.perf_counter() - started
        self.input_names = [node.name for node in self.session.get_inputs()]

    def run(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """The graph's one output for a padded batch."""
        return self.session.run(None, {name: batch[name] for name in self.input_names})[0]

    def scorer_info(self, resolved: ResolvedModel, family: Family, max_length: int) -> ScorerInfo:
        """What /health and /warmup report: the file, whether the cache served it, and its cost."""
        return ScorerInfo(
            model=resolved.model_id,
            revision=resolved.revision,
            family=family,
            backend="onnx",
            device="cpu",
            dtype="int8" if self.quantize == "int8" else "float32",
            max_length=max_length,
            details={
                "onnx_file": str(self.build.path),
                "onnx_cache_hit": str(self.build.cache_hit).lower(),
                "onnx_build_s": f"{self.build.build_s:.3f}",
                "onnx_session_s": f"{self.session_s:.3f}",
                "quantize": self.quantize,
                "threads": str(self.threads),
                "onnxruntime": onnxruntime.__version__,
            },
        )


class OnnxCrossEncoderScorer(CrossEncoderScorer):
    """The cross-encoder's tokenization, scored by onnxruntime: raw = the one logit."""

    def __init__(self, resolved: ResolvedModel, settings: Settings) -> None:
        # Not super().__init__: that loads the torch weights, which this backend must not hold.
        self.setup_tokenization(resolved, settings, AutoConfig.from_pretrained(resolved.path, local_files_only=True))
        self.onnx = OnnxSession(resolved, "sequence-classification", settings)
        self.info = replace(self.onnx.scorer_info(resolved, "cross-encoder", self.max_length), labels=self.labels)

    def score_batch(self, pairs: Sequence[EncodedPair]) -> np.ndarray:
        return self.onnx.run(self.pad(pairs))[:, 0].astype(np.float64)


class OnnxBiEncoderScorer(BiEncoderScorer):
    """The bi-encoder's tokenization and cosine, with token states from onnxruntime."""

    def __init__(self, resolved: ResolvedModel, settings: Settings, calibration: Calibration) -> None:
        # Not super().__init__: that loads the torch weights, which this backend must not hold.
        self.setup_tokenization(resolved, settings)
        self.calibration = calibration
        self.onnx = OnnxSession(resolved, "feature-extraction", settings)
        self.info = self.onnx.scorer_info(resolved, "bi-encoder", self.max_length)

    def embed(self, token_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        ids, mask = pad_rows(token_lists, self.tokenizer.pad_token_id or 0)
        hidden = torch.from_numpy(self.onnx.run({"input_ids": ids, "attention_mask": mask}))
        return mean_pooled(hidden, torch.from_numpy(mask))
