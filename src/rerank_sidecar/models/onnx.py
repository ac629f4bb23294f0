"""ONNX Runtime on the CPU: the runtime of the cross-encoder and bi-encoder families, fp32 or per-token int8.

A family's scorer is the same object on either runtime: it keeps its tokenization (encode, pad,
query fitting, chunk windows) and its scoring math, and takes an `OnnxSession` in place of a
`TorchRuntime` for the forward pass, over a file that `onnx_export` exported once and cached.
The torch weights are loaded only to export, never held while serving.

Qwen3-Reranker stays on torch (its family has no onnx loader), for four reasons:
- No real Qwen3-Reranker weights are on disk here, only tiny random test models, so an ONNX Qwen3
  could not be checked on real rankings the way the embedded default's int8 is (NDCG@10 on TREC DL
  2020 within 0.005 of torch fp32, tests/test_onnx.py).
- Its fp32 export is past protobuf's 2 GB limit already at 0.6B parameters (16-32 GB for 4B/8B),
  a second copy of the model on disk and a long export on the first start.
- Where it is practical, on a GPU, this onnxruntime build has no GPU provider; torch fp16/bf16 is
  the runtime there.
- On the CPU a 0.6B decoder costs dozens of times MiniLM-L6's compute per pair; a constant-factor
  runtime gain does not change which model a CPU user should pick.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import onnxruntime
import torch

from ..config import Settings
from .device import inference_threads
from .onnx_export import ExportSpec, Graph, Quantize, ensure_onnx
from .resolve import ResolvedModel


class OnnxSession:
    """One onnxruntime CPU session over the cached export of a model (the `Runtime` of models/base.py)."""

    backend = "onnx"
    device = "cpu"

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
        self.dtype = "int8" if self.quantize == "int8" else "float32"
        # What /health and /warmup report: the file, whether the cache served it, and its cost.
        self.details = {
            "onnx_file": str(self.build.path),
            "onnx_cache_hit": str(self.build.cache_hit).lower(),
            "onnx_build_s": f"{self.build.build_s:.3f}",
            "onnx_session_s": f"{self.session_s:.3f}",
            "quantize": self.quantize,
            "threads": str(self.threads),
            "onnxruntime": onnxruntime.__version__,
        }

    def run(self, batch: Mapping[str, np.ndarray]) -> torch.Tensor:
        """The graph's one output for a padded batch."""
        return torch.from_numpy(self.session.run(None, {name: batch[name] for name in self.input_names})[0])
