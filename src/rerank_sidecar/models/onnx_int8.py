"""int8 whose scores do not depend on batch-mates: int8 weights, activations quantized one token at a time.

onnxruntime's dynamic quantization picks one activation scale per tensor per batch, so a pair's
score moved with what it was batched with (up to 0.05 in raw cosine on the embedded model) and
with padding. Here every MatMul against a weight matrix becomes, on the activation viewed as one
row per token:

    scale = max|x| over the row / 127          (one scale per token, from that token alone)
    x_u8  = QuantizeLinear(x, scale, 128)      (per row: symmetric, shifted into uint8)
    y     = MatMulIntegerToFloat(x_u8, W_s8, w_scale) * scale

Integer products are exact, and everything else is per token, so a pair scores the same alone or in
any batch (tests/test_onnx.py holds it to 1e-4; measured difference 0.0). Weights are per output
channel with a 7-bit range, which keeps the u8 x s8 products of CPUs without VNNI (AVX2) from
saturating their 16-bit sums.

Measured on the 2-core EPYC (in-process, embedded bi-encoder, 6 TREC DL 2020 topics x 100 passages,
2 threads, /tmp script of issue 15): quiet machine fp32 67, per-tensor dynamic 137, per-token 120
pairs/s; busy machine (load 5) dynamic 61, per-token 62, static QDQ calibrated with min/max 62.
Largest raw-score difference from fp32: per-token 0.041, dynamic 0.096, static 0.157; static also
needs calibration text. Per-token was kept: batch-independent, closest to fp32, no calibration.
It was first written with one elementwise op per step (Div, Round, Add, Cast to quantize; Cast,
Mul, Mul after MatMulInteger), which took about 40% of a forward pass; the fused QuantizeLinear and
MatMulIntegerToFloat above score a batch of 8 x 96 tokens of the MiniLM-L6 cross-encoder shape at
330 pairs/s against 246 (same machine, alternating runs), with the same scores to 0.002.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Weights use [-63, 63]: the 7-bit range (see the module docstring).
WEIGHT_LEVELS = 63
ACTIVATION_LEVELS = 127
ACTIVATION_ZERO_POINT = 128
# Constants the rewritten graph shares; names prefixed so they cannot clash with the export's.
_EPSILON, _LEVELS, _ZERO_POINT, _ONE = "int8_epsilon", "int8_levels", "int8_zero_point", "int8_one"
_FIRST, _SECOND, _LAST, _END = "int8_axis_first", "int8_axis_second", "int8_axis_last", "int8_axis_end"
# onnxruntime's contrib operators (MatMulIntegerToFloat).
_MICROSOFT = "com.microsoft"


def quantize_per_token(fp32: Path, output: Path, external_data: bool) -> None:
    """Writes `output`: `fp32` with every MatMul against a weight matrix in int8."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer if len(init.dims) == 2}
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    quantized_inputs: dict[str, str] = {}  # activation name -> prefix of its uint8 rows and their scales
    quantized_weights: set[str] = set()
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            nodes.append(node)
            continue
        activation, weight_name = node.input
        if activation not in quantized_inputs:
            # Q, K and V read the same input: it is quantized once.
            quantized_inputs[activation] = f"int8_act{len(quantized_inputs)}"
            nodes += _quantize_rows(activation, quantized_inputs[activation])
        if weight_name not in quantized_weights:
            quantized_weights.add(weight_name)
            added += _int8_weight(numpy_helper.to_array(weights[weight_name]), weight_name)
        nodes += _integer_matmul(quantized_inputs[activation], weight_name, node.output[0])
    added += [
        numpy_helper.from_array(np.array(1e-8, np.float32), _EPSILON),
        numpy_helper.from_array(np.array(ACTIVATION_LEVELS, np.float32), _LEVELS),
        numpy_helper.from_array(np.array(ACTIVATION_ZERO_POINT, np.uint8), _ZERO_POINT),
        numpy_helper.from_array(np.array(1.0, np.float32), _ONE),
        numpy_helper.from_array(np.array([0], np.int64), _FIRST),
        numpy_helper.from_array(np.array([-1], np.int64), _LAST),
        numpy_helper.from_array(np.array([1], np.int64), _SECOND),
        numpy_helper.from_array(np.array([2**62], np.int64), _END),
    ]
    read = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(opset.domain == _MICROSOFT for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(_MICROSOFT, 1))
    onnx.save(model, str(output), save_as_external_data=external_data)


def _quantize_rows(activation: str, prefix: str) -> list:
    """Nodes that view the activation as one row per token and make `{prefix}_u8` (the rows in uint8),
    `{prefix}_scale` (one scale per row, as a column) and `{prefix}_lead` (the activation's shape but its last)."""
    from onnx import helper

    return [
        helper.make_node("Shape", [activation], [f"{prefix}_shape"]),
        helper.make_node("Slice", [f"{prefix}_shape", _LAST, _END], [f"{prefix}_width"]),
        helper.make_node("Slice", [f"{prefix}_shape", _FIRST, _LAST], [f"{prefix}_lead"]),
        helper.make_node("Concat", [_LAST, f"{prefix}_width"], [f"{prefix}_rows_shape"], axis=0),
        helper.make_node("Reshape", [activation, f"{prefix}_rows_shape"], [f"{prefix}_rows"]),
        helper.make_node("Abs", [f"{prefix}_rows"], [f"{prefix}_abs"]),
        helper.make_node("ReduceMax", [f"{prefix}_abs"], [f"{prefix}_max"], axes=[1], keepdims=0),
        helper.make_node("Max", [f"{prefix}_max", _EPSILON], [f"{prefix}_range"]),
        helper.make_node("Div", [f"{prefix}_range", _LEVELS], [f"{prefix}_row_scale"]),
        helper.make_node("Shape", [f"{prefix}_row_scale"], [f"{prefix}_count"]),
        helper.make_node("Expand", [_ZERO_POINT, f"{prefix}_count"], [f"{prefix}_zero_points"]),
        helper.make_node("QuantizeLinear", [f"{prefix}_rows", f"{prefix}_row_scale", f"{prefix}_zero_points"],
                         [f"{prefix}_u8"], axis=0),
        helper.make_node("Unsqueeze", [f"{prefix}_row_scale", _SECOND], [f"{prefix}_scale"]),
    ]


def _integer_matmul(prefix: str, weight_name: str, out: str) -> list:
    """Nodes that make `out` from the uint8 rows `prefix` and the int8 weight, in the activation's shape."""
    from onnx import helper

    return [
        helper.make_node("MatMulIntegerToFloat",
                         [f"{prefix}_u8", f"{weight_name}_int8", _ONE, f"{weight_name}_int8_scale", _ZERO_POINT],
                         [f"{out}_int8_rows"], domain=_MICROSOFT),
        helper.make_node("Mul", [f"{out}_int8_rows", f"{prefix}_scale"], [f"{out}_rows"]),
        helper.make_node("Shape", [f"{weight_name}_int8_scale"], [f"{out}_width"]),
        helper.make_node("Concat", [f"{prefix}_lead", f"{out}_width"], [f"{out}_shape"], axis=0),
        helper.make_node("Reshape", [f"{out}_rows", f"{out}_shape"], [out]),
    ]


def _int8_weight(weight: np.ndarray, name: str) -> list:
    """The weight in int8 with one scale per output channel (column): two initializers."""
    from onnx import numpy_helper

    weight = weight.astype(np.float32)
    scale = np.abs(weight).max(axis=0) / WEIGHT_LEVELS
    scale[scale == 0] = 1.0
    return [
        numpy_helper.from_array(np.round(weight / scale).astype(np.int8), f"{name}_int8"),
        numpy_helper.from_array(scale.astype(np.float32), f"{name}_int8_scale"),
    ]
