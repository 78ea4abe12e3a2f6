"""Size and cost of an exported ONNX graph: parameters, MACs at batch 1, bytes and zip bytes.

Measured on the file itself (not on the torch module), so pruning, factorization and sharing are
judged by what actually ships.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np


def zip_bytes(path: Path) -> int:
    """The file's size inside a deflate-compressed zip (what an app store or OTA update ships)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, arcname=Path(path).name)
        if Path(path).suffix == ".xml" and Path(path).with_suffix(".bin").is_file():  # an OpenVINO IR's weights
            z.write(Path(path).with_suffix(".bin"), arcname=Path(path).with_suffix(".bin").name)
    return buf.tell()


def onnx_stats(path: Path) -> dict:
    """params (float weight elements), MACs of Conv/ConvTranspose/Gemm/MatMul at batch 1, bytes, zip bytes."""
    import onnx
    from onnx import numpy_helper, shape_inference

    proto = onnx.load(str(path))
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    proto = shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {}
    for v in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = [d.dim_value for d in dims]
    inits = {i.name: i for i in proto.graph.initializer}
    for name, init in inits.items():
        shapes[name] = list(init.dims)
    params = sum(int(np.prod(i.dims)) for i in inits.values()
                 if numpy_helper.to_array(i).dtype.kind == "f" and len(i.dims) > 0)
    macs, unknown = 0, []
    for node in proto.graph.node:
        count = _macs(node, shapes)
        if count is None:
            unknown.append(node.name or node.op_type)
        else:
            macs += count
    size = Path(path).stat().st_size
    return {"params": params, "macs": int(macs), "bytes": size, "zip_bytes": zip_bytes(path),
            "macs_unknown_nodes": unknown}


def _macs(node, shapes: dict) -> int | None:
    """MACs of one node, 0 for ops without multiply-accumulates, None when a shape is unknown."""
    op = node.op_type
    if op not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    ins = [shapes.get(n) for n in node.input[:2]]
    out = shapes.get(node.output[0])
    if any(s is None for s in ins) or out is None:
        return None
    weight = ins[1]
    if op == "Conv":  # every output element: (Cin / groups) * kernel MACs
        return int(np.prod(out)) * int(np.prod(weight[1:]))
    if op == "ConvTranspose":  # every input element scatters into Cout / groups * kernel outputs
        return int(np.prod(ins[0])) * int(np.prod(weight[1:]))  # weight: (Cin, Cout / groups, *kernel)
    if op == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        k = ins[0][0] if trans_a else ins[0][-1]
        return int(np.prod(out)) * int(k)
    return int(np.prod(out)) * int(ins[0][-1])  # MatMul
