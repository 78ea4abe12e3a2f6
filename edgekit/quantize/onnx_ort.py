"""ONNX quantization with ONNX Runtime's quantizer: fp16, static int8 (per-channel weights), and
int4 weights with int8 activations. A *plan* says which layers stay at higher precision."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from ..core.data import Split
from ..core.errors import StageError, UsageError
from .calibration import SplitReader

# Arrangements tried for int8 (the latency check keeps the fastest that meets the budget). reduce_range
# (7-bit weights) matters on x86 without VNNI: there the U8S8 kernels add pairs of u8*s8 products in
# int16 (vpmaddubsw), which saturates; the fused file can lose 20 dB of output SNR to it.
ARRANGEMENTS = {
    "qdq-u8s8": {"format": "QDQ", "activation": "QUInt8", "weight": "QInt8", "reduce_range": False},
    "qoperator-u8s8": {"format": "QOperator", "activation": "QUInt8", "weight": "QInt8", "reduce_range": False},
    "qdq-s8s8": {"format": "QDQ", "activation": "QInt8", "weight": "QInt8", "reduce_range": False},
    "qdq-u8s8-reduce-range": {"format": "QDQ", "activation": "QUInt8", "weight": "QInt8", "reduce_range": True},
    "qoperator-u8s8-reduce-range": {"format": "QOperator", "activation": "QUInt8", "weight": "QInt8",
                                    "reduce_range": True},
    "qdq-u8s8-float-depthwise": {"format": "QDQ", "activation": "QUInt8", "weight": "QInt8", "reduce_range": False,
                                 "float_depthwise": True},
    # Transformers: the attention mask path (a -3.4e38 additive constant) and the softmax stay float, as do
    # the activation-by-activation matmuls (Q.K^T, attention.V); the weighted layers are int8.
    "qdq-u8s8-float-attention": {"format": "QDQ", "activation": "QUInt8", "weight": "QInt8", "reduce_range": False,
                                 "float_attention": True},
    # Dynamic: int8 weights, activations quantized at run time from each input's own range (no calibration
    # ranges to be wrecked by outliers); ORT's choice for transformers.
    "dynamic-u8s8": {"format": "dynamic", "activation": "QUInt8", "weight": "QInt8", "reduce_range": False},
}
ATTENTION_ONLY = ("qdq-u8s8-float-attention",)  # tried only on graphs that have attention (has_attention)
CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class QuantPlan:
    bits: int  # 8 or 4 (weights); activations are 8-bit
    arrangement: str = "qdq-u8s8"
    calibration: str = "minmax"
    float_nodes: frozenset[str] = field(default_factory=frozenset)  # kept in float
    int8_nodes: frozenset[str] = field(default_factory=frozenset)  # int8 weights inside an int4 file
    only_nodes: frozenset[str] = field(default_factory=frozenset)  # quantize just these (sensitivity probes)

    def describe(self) -> str:
        parts = [f"{self.bits}-bit weights", self.arrangement, self.calibration]
        if self.int8_nodes:
            parts.append(f"int8: {', '.join(sorted(self.int8_nodes))}")
        if self.float_nodes:
            parts.append(f"float: {', '.join(sorted(self.float_nodes))}")
        return ", ".join(parts)


def preprocess(src: Path, out: Path) -> Path:
    """ORT's recommended pre-processing (shape inference, graph optimisation) before quantization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantize the plain graph when it fails
        return src
    return out


def weighted_nodes(path: Path) -> dict[str, str]:
    """Quantizable weighted nodes: node name -> op type ('Conv-depthwise' for grouped convs)."""
    import onnx

    proto = onnx.load(str(path))
    out = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose"):
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            out[node.name] = "Conv-depthwise" if node.op_type == "Conv" and group > 1 else node.op_type
    return out


def quantize_onnx(src: Path, out: Path, calibration: Split, plan: QuantPlan, log: io.StringIO | None = None) -> dict:
    """Write a quantized copy of ``src`` (a pre-processed fp32 graph) following ``plan``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    arr = ARRANGEMENTS[plan.arrangement]
    nodes = weighted_nodes(src)
    exclude = set(plan.float_nodes)
    if arr.get("float_depthwise"):
        exclude |= {n for n, kind in nodes.items() if kind == "Conv-depthwise"}
    if arr.get("float_attention"):
        exclude |= attention_path(src)
    if arr["format"] == "dynamic":
        return _quantize_dynamic(src, out, plan, exclude)
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if plan.calibration == "percentile":
        extra["CalibPercentile"] = 99.99
    weight_type = QuantType.QInt4 if plan.bits == 4 else getattr(QuantType, arr["weight"])
    quant_format = QuantFormat.QDQ if plan.bits == 4 else getattr(QuantFormat, arr["format"])
    if plan.bits == 4 and plan.int8_nodes:
        proto = onnx.load(str(src))
        weights = {n.name: n.input[1] for n in proto.graph.node if n.name in plan.int8_nodes and len(n.input) > 1}
        extra["TensorQuantOverrides"] = {w: [{"quant_type": QuantType.QInt8}] for w in weights.values()}
    names = [i.name for i in onnx.load(str(src), load_external_data=False).graph.input]
    try:
        # ORT's quantizer reports through logging (the CLI quiets it); nothing redirects the process's streams
        quantize_static(str(src), str(out), SplitReader(calibration, names), quant_format=quant_format,
                        per_channel=True, reduce_range=arr["reduce_range"],
                        activation_type=getattr(QuantType, arr["activation"]), weight_type=weight_type,
                        nodes_to_exclude=sorted(exclude), nodes_to_quantize=sorted(plan.only_nodes) or None,
                        calibrate_method=getattr(CalibrationMethod, CALIBRATION[plan.calibration]),
                        extra_options=extra)
    except Exception as exc:
        raise StageError("quantize onnx", f"{plan.describe()}: {type(exc).__name__}: {str(exc)[:300]}") from None
    return {"quantizer": "onnxruntime.quantization.quantize_static", "plan": plan.describe(),
            "arrangement": plan.arrangement, "calibration": plan.calibration, "per_channel": True,
            "float_nodes": sorted(exclude), "int8_nodes": sorted(plan.int8_nodes)}


def _quantize_dynamic(src: Path, out: Path, plan: QuantPlan, exclude: set[str]) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    try:
        quantize_dynamic(str(src), str(out), per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=sorted(exclude), nodes_to_quantize=sorted(plan.only_nodes) or None,
                         extra_options={"MatMulConstBOnly": True})
    except Exception as exc:
        raise StageError("quantize onnx", f"{plan.describe()}: {type(exc).__name__}: {str(exc)[:300]}") from None
    return {"quantizer": "onnxruntime.quantization.quantize_dynamic", "plan": plan.describe(),
            "arrangement": plan.arrangement, "calibration": "none (activations quantized at run time)",
            "per_channel": True, "float_nodes": sorted(exclude), "int8_nodes": []}


def attention_path(path: Path) -> set[str]:
    """Nodes an attention block needs in float: every Softmax, every MatMul of two activations, and every
    node computed from an integer graph input (the mask) other than the embedding lookups."""
    import onnx

    proto = onnx.load(str(path))
    g = proto.graph
    constants = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    tainted = {i.name for i in g.input if i.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32)}
    keep = set()
    for node in g.node:  # graph order is topological
        if node.op_type == "Gather" and node.input and node.input[0] in constants:
            continue  # an embedding lookup: ids in, float rows out, nothing to keep in float
        if any(i in tainted for i in node.input):
            keep.add(node.name)
            if all(i in tainted or i in constants for i in node.input if i):
                tainted.update(node.output)  # still the mask's own arithmetic
            # else the mask meets the attention scores here: kept float, its output an ordinary activation
        if node.op_type == "Softmax" or (node.op_type == "MatMul" and not any(i in constants for i in node.input)):
            keep.add(node.name)
    return {n for n in keep if n}


def has_attention(path: Path) -> bool:
    """A Softmax and a MatMul (or Einsum) of two activations (Q.K^T): attention. A classifier's softmax head alone
    is not. Constness flows through nodes computed from constants only (a Transpose, Cast or DequantizeLinear of a
    weight), so a weight reached through them is still a weight."""
    import onnx

    g = onnx.load(str(path)).graph
    constants = {t.name for t in g.initializer}
    pairs = False
    for n in g.node:  # graph order is topological
        inputs = [i for i in n.input if i]
        if n.op_type == "Constant" or (inputs and all(i in constants for i in inputs)):
            constants.update(n.output)
        elif n.op_type in ("MatMul", "Einsum") and len(inputs) >= 2 and not any(i in constants for i in inputs):
            pairs = True
    return pairs and any(n.op_type == "Softmax" for n in g.node)


def to_fp16(src: Path, out: Path, keep_io_types: bool = True) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(src)), keep_io_types=keep_io_types)
    onnx.save(proto, str(out))
    return {"quantizer": "onnxruntime.transformers.float16", "keep_io_types": keep_io_types}


def check_calibration(split: Split | None) -> list[str]:
    """Warnings about calibration data; no data at all is an error."""
    if split is None or len(split) == 0:
        raise UsageError("quantization needs calibration samples: pass --data (or lower --calib-samples)")
    if len(split) < 32:
        return [f"calibrating on only {len(split)} samples; ranges may be unstable (100+ recommended)"]
    return []
