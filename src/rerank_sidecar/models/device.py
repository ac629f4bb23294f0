"""Device, precision and thread choices shared by the torch-based backends."""

from __future__ import annotations

import os

import torch


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
