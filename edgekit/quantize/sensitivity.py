"""Per-layer sensitivity, measured on calibration data with ONNX Runtime's qdq_loss_debug.

A layer's score is the worse (lower) of two signal-to-quantization-noise ratios: its weights
(float vs dequantized) and its output activation (the same tensor before vs after its own
quantize/dequantize pair, so the noise is the layer's own, not inherited from earlier layers).
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import onnx

from ..data import Split
from .calibration import SplitReader


def rank_layers(float_path: Path, qdq_path: Path, calibration: Split, limit: int = 64) -> list[tuple[str, float]]:
    """Weighted nodes of the float graph, most sensitive first, with their SNR in dB."""
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, compute_activation_error,
                                                         compute_weight_error, create_activation_matching,
                                                         create_weight_matching,
                                                         modify_model_output_intermediate_tensors)

    proto = onnx.load(str(float_path))
    names = [i.name for i in proto.graph.input if i.name not in {x.name for x in proto.graph.initializer}]
    sub = Split({k: v[:limit] for k, v in calibration.inputs.items()})
    with tempfile.TemporaryDirectory(prefix="edgekit-sens-") as tmp:
        f_aug, q_aug = str(Path(tmp) / "f.onnx"), str(Path(tmp) / "q.onnx")
        modify_model_output_intermediate_tensors(str(float_path), f_aug)
        modify_model_output_intermediate_tensors(str(qdq_path), q_aug)
        f_act = collect_activations(f_aug, SplitReader(sub, names))
        q_act = collect_activations(q_aug, SplitReader(sub, names))
    act_err = compute_activation_error(create_activation_matching(q_act, f_act))
    w_err = compute_weight_error(create_weight_matching(str(float_path), str(qdq_path)))
    consumers: dict[str, list] = {}
    for node in proto.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    scores = []
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            continue
        snrs = []
        if len(node.input) > 1 and node.input[1] in w_err:
            snrs.append(float(w_err[node.input[1]]))
        tensor = node.output[0]
        for _ in range(3):  # through fused activations (Relu/Clip) to the tensor that is quantized
            if tensor in act_err:
                snrs.append(float(act_err[tensor]["qdq_err"]))
                break
            nxt = consumers.get(tensor, [])
            if len(nxt) != 1 or nxt[0].op_type not in ("Relu", "Clip", "Add", "Sigmoid", "HardSwish"):
                break
            tensor = nxt[0].output[0]
        finite = [s for s in snrs if not math.isnan(s)]
        if finite:
            scores.append((node.name, min(finite)))
    return sorted(scores, key=lambda item: item[1])
