"""int8 linear layers for torch on the CPU whose outputs do not depend on batch-mates (Qwen3's CPU int8).

torch's dynamic quantization (torch.ao `quantize_dynamic`) picks one activation scale per batch, so a
pair's score moved with what it was batched with, and the score cache kept whichever value came first.
Here, as in the ONNX path (onnx_int8), each token of the activation is quantized with its own scale:

    scale = max|x| over the token's row / 127       (from that token alone)
    x_s8  = round(x / scale)
    y     = (x_s8 @ W_s8) * scale * w_scale          (integer product: torch._int_mm, int32 sums)

Integer products are exact and every other step is per token, so a layer gives a token the same output
alone or in any batch. Weights are per output channel with onnx_int8's 7-bit range, which keeps the
u8 x s8 products of CPUs without VNNI from saturating their 16-bit sums whatever kernel the batch shape
picks. Speed and memory beside torch.ao's dynamic quantization: BENCHMARKS.md, Qwen3 section.
"""

from __future__ import annotations

import torch

from .onnx_int8 import ACTIVATION_LEVELS, WEIGHT_LEVELS

# Smallest scale: keeps an all-zero row (or weight channel) from dividing by zero.
_TINY_SCALE = 1e-12


class PerTokenInt8Linear(torch.nn.Module):
    """A `torch.nn.Linear` with int8 weights; its input is quantized one token (row) at a time."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=_TINY_SCALE) / WEIGHT_LEVELS
        # Stored as (in, out): the layout torch._int_mm multiplies by without a transpose per call.
        self.register_buffer("weight_t", torch.round(weight / scale[:, None]).to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=_TINY_SCALE) / ACTIVATION_LEVELS
        quantized = rows.div(scale).round_().to(torch.int8)
        out = torch._int_mm(quantized, self.weight_t).float().mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], out.shape[-1]).to(x.dtype)


def quantize_linear_layers(model: torch.nn.Module) -> torch.nn.Module:
    """Every linear layer of `model` replaced, in place, by a `PerTokenInt8Linear` (CPU, float32 model)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, PerTokenInt8Linear(child))
    # The float parameters left (embeddings, norms) may be views of the memory-mapped checkpoint, which then
    # stays mapped with every fp32 page the quantizer read: owning copies let it go (0.6B shape: 2.86 GB of
    # RSS after load before, 1.71 GB after, on the 2-core EPYC, measured with torch.ao's quantizer).
    for parameter in model.parameters():
        parameter.data = parameter.data.clone()
    return model
