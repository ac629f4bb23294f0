"""The torch runtime, and the device, precision and thread choices every torch-based scorer shares."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np
import torch
from transformers import PreTrainedModel

from ..config import Settings
from .resolve import ResolvedModel


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity and container pinning)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def inference_threads(requested: int) -> int:
    """Intra-op threads for inference: the setting, or every available core when it is 0."""
    return requested if requested > 0 else available_cores()


def pick_device(requested: str) -> torch.device:
    """`auto` prefers cuda, then mps, then cpu; an explicit device that is missing fails loudly."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("RERANK_DEVICE=cuda but torch sees no CUDA device (torch.cuda.is_available() is False)")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("RERANK_DEVICE=mps but torch sees no MPS device")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """`auto` is float16 on a GPU and float32 on the CPU (where half precision is slower, not faster)."""
    if requested == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    return getattr(torch, requested)


def configure_torch_threads(requested: int) -> int:
    """Sets torch's intra-op threads from the cores available; returns the count used."""
    threads = inference_threads(requested)
    torch.set_num_threads(threads)
    return threads


class TorchRuntime:
    """A transformers model on torch (the `Runtime` of models/base.py): loaded once, run in inference mode."""

    backend = "torch"

    def __init__(
        self, from_pretrained: Callable[..., PreTrainedModel], resolved: ResolvedModel, settings: Settings
    ) -> None:
        self.torch_device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, self.torch_device)
        configure_torch_threads(settings.threads)
        self.model = from_pretrained(resolved.path, local_files_only=True, dtype=dtype)
        self.model.to(self.torch_device).eval()
        self.device = str(self.torch_device)
        self.dtype = str(dtype).removeprefix("torch.")
        self.details: dict[str, str] = {}

    @torch.inference_mode()
    def run(self, batch: Mapping[str, np.ndarray]) -> torch.Tensor:
        inputs = {name: torch.from_numpy(array).to(self.torch_device) for name, array in batch.items()}
        return self.model(**inputs)[0]
