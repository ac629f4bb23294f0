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
picks.

Measured beside torch.ao's dynamic int8 on the 2-core EPYC (AVX-512 VNNI, 1 thread, shared with other
jobs; /tmp scripts of issue 22, alternating runs): one Qwen3-0.6B layer's seven linear layers on 1536
tokens took 1.11x its time (best of 12; 1.14x median), and 0.29x fp32's. torch._int_mm alone is a little
faster than torch.ao's fused kernel; the cost is the int32 -> float rescale (about 11% of the product).
Whole 0.6B-shape passes (12 DL20 pairs, prefix reuse, 4 alternating passes) were too noisy on the busy
machine to rank them: median 0.97 vs 1.22 pairs/s, best 2.21 vs 1.99. Largest raw-score difference from
fp32 over the first 16 DL20 pairs: 0.070 here, 0.119 with torch.ao; batch-mates moved torch.ao's scores on the tiny
test model by up to 0.41, these by 1e-6 (float rounding outside the integer product). RSS once loaded:
1672 MiB against torch.ao's 1613 (BENCHMARKS.md before this change).
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
