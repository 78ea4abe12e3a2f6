"""Reading .tflite flatbuffers (LiteRT's schema): ops, weights and their stored precision."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from .tf_import import missing

WEIGHTED = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1, "BATCH_MATMUL": 1,
            "EMBEDDING_LOOKUP": 1}
_TYPES = {0: "fp32", 1: "fp16", 2: "int32", 3: "uint8", 4: "int64", 7: "int16", 9: "int8", 17: "int4"}


@dataclass(frozen=True)
class TfliteInfo:
    ops: list[str]  # one entry per operator, in graph order
    params: int  # elements in constant tensors
    precision_map: dict[str, str]  # weighted op (named by its weight tensor) -> stored precision
    scopes: dict[str, str] = field(default_factory=dict)  # weight name -> the op's output tensor name


def read_tflite(path: str | Path) -> TfliteInfo:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise missing("reading .tflite files (ai-edge-litert)", exc.name) from None
    data = Path(path).read_bytes()
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    except Exception as exc:
        raise UsageError(f"{path} is not a valid .tflite flatbuffer (truncated or corrupt: {exc or type(exc).__name__}); "
                         "re-export it") from None
    if not model.subgraphs:
        raise UsageError(f"{path} is not a valid .tflite flatbuffer (no subgraphs); re-export it")
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    ops, pmap, params, scopes = [], {}, 0, {}
    def op_name_of(code) -> str:
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        if name == "CUSTOM":
            custom = _text(code.customCode)
            return f"CUSTOM:{custom}"
        return name

    producers = {}
    for op in graph.operators or []:
        op_name = op_name_of(model.operatorCodes[op.opcodeIndex])
        ops.append(op_name)
        for out in op.outputs if op.outputs is not None else []:
            producers[int(out)] = (op_name, op)
    for tensor in graph.tensors or []:
        buf = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
        is_index = tensor.type in (2, 4)  # int32/int64 shape constants are not parameters
        if not is_index and buf is not None and (buf.data is not None and len(buf.data) or getattr(buf, "size", 0)):
            params += int(np.prod(tensor.shape)) if tensor.shape is not None else 0
    for op in graph.operators or []:
        index = WEIGHTED.get(op_name_of(model.operatorCodes[op.opcodeIndex]))
        if index is None or op.inputs is None or len(op.inputs) <= index:
            continue
        t = int(op.inputs[index])
        if t < 0:
            continue
        if t in producers and producers[t][0] == "DEQUANTIZE":  # fp16 / int8 weights dequantized at load
            t = int(producers[t][1].inputs[0])
        tensor = graph.tensors[t]
        name = _text(tensor.name)
        pmap[name] = _TYPES.get(tensor.type, f"type{tensor.type}")
        if op.outputs is not None and len(op.outputs):
            scopes[name] = _text(graph.tensors[int(op.outputs[0])].name)
    return TfliteInfo(ops, params, pmap, scopes)


def _text(name) -> str:
    """A flatbuffer string field: bytes from the object API, str from some schema builds."""
    return name.decode() if isinstance(name, bytes) else str(name)


def io_quantization(path: str | Path) -> dict[str, dict]:
    """Per graph input/output tensor name with an integer type: its affine ``scale`` and ``zero_point``
    (what an app needs to feed an int8-I/O file float data and read its outputs back)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as exc:
        raise missing("reading .tflite files (ai-edge-litert)", exc.name) from None
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(Path(path).read_bytes(), 0))
    graph = model.subgraphs[0]
    out = {}
    for index in list(graph.inputs if graph.inputs is not None else []) + list(
            graph.outputs if graph.outputs is not None else []):
        tensor = graph.tensors[int(index)]
        q = tensor.quantization
        if tensor.type not in (3, 7, 9) or q is None or q.scale is None or not len(q.scale):
            continue  # float tensors (and integer ones that carry ids, not quantized values)
        zero = q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0]
        out[_text(tensor.name)] = {"scale": float(q.scale[0]), "zero_point": int(zero[0]),
                                   "dtype": _TYPES[tensor.type]}
    return out


def integer_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The stored integers of every int4/int8 weight of a weighted op, by weight name, in the file's own
    shape (int4 unpacked: two per byte, low nibble first, sign-extended)."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    graph = model.subgraphs[0]
    wanted = set(read_tflite(path).precision_map)
    out = {}
    for tensor in graph.tensors or []:
        name = _text(tensor.name)
        if name not in wanted or tensor.type not in (9, 17):
            continue
        raw = np.asarray(model.buffers[tensor.buffer].data, dtype=np.uint8)
        count = int(np.prod(tensor.shape))
        if tensor.type == 9:
            values = raw.view(np.int8).astype(np.int32)
        else:
            nibbles = np.stack([raw & 0x0F, raw >> 4], axis=1).reshape(-1)[:count].astype(np.int32)
            values = np.where(nibbles > 7, nibbles - 16, nibbles)
        out[name] = values[:count].reshape(tensor.shape)
    return out
