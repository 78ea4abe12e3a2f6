"""Rewrites of the reference ONNX graph that keep its numbers and make its TFLite conversion run on XNNPACK.

onnx2tf turns a padded or ceil-mode MaxPool into PADV2 with a -inf fill, which XNNPACK cannot prepare in an
integer file: LiteRT then runs the whole graph without its delegate, many times slower. A max over a window
is unchanged when the padding repeats the edge instead (every window that reaches past the edge holds the
edge element), and edge repetition is a Slice and a Concat, which XNNPACK runs. The pool itself then needs no
padding and floor rounding. Exact: the rewritten graph gives the same numbers, bit for bit.
"""
from __future__ import annotations

import math
from pathlib import Path


def lower_padded_pools(path: Path, out: Path) -> tuple[Path, int]:
    """``path`` with every padded or ceil-mode 2-D MaxPool whose spatial size is known rewritten as edge
    repetition (Slice + Concat) and an unpadded floor-mode MaxPool, saved to ``out``; and how many were
    rewritten (``path`` itself when none)."""
    import onnx
    from onnx import helper

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = proto.graph
    sizes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
             for v in (*graph.value_info, *graph.input, *graph.output)}
    nodes, count = [], 0
    for node in graph.node:
        edges = _edge_pads(node, sizes.get(node.input[0]) if node.input else None, helper)
        if edges is None:
            nodes.append(node)
            continue
        count += 1
        base = node.name or f"maxpool{count}"
        current = node.input[0]
        for axis, (before, after, size) in enumerate(edges, start=2):
            if not before and not after:
                continue
            pieces = []
            for where, repeat, start in (("begin", before, 0), ("end", after, size - 1)):
                if not repeat:
                    continue
                names = [f"{base}_edge{axis}_{where}_{k}" for k in ("starts", "ends", "axes")]
                graph.initializer.extend(onnx.numpy_helper.from_array(_i64(v), n)
                                         for n, v in zip(names, (start, start + 1, axis)))
                sliced = f"{base}_edge{axis}_{where}"
                nodes.append(helper.make_node("Slice", [current, *names], [sliced], name=sliced))
                pieces.append((where, [sliced] * repeat))
            parts = [*dict(pieces).get("begin", []), current, *dict(pieces).get("end", [])]
            joined = f"{base}_edge{axis}"
            nodes.append(helper.make_node("Concat", parts, [joined], axis=axis, name=joined))
            current = joined
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        nodes.append(helper.make_node("MaxPool", [current], list(node.output), name=base,
                                      kernel_shape=attrs["kernel_shape"], strides=attrs.get("strides", [1, 1])))
    if not count:
        return path, 0
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out, count


def _i64(value: int):
    import numpy as np

    return np.array([value], dtype=np.int64)


def _edge_pads(node, shape, helper) -> list[tuple[int, int, int]] | None:
    """(before, after, size) per spatial axis for a MaxPool this rewrite covers; None for any other node."""
    if node.op_type != "MaxPool" or len(node.output) != 1 or shape is None or len(shape) != 4:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel, strides = list(attrs.get("kernel_shape", [])), list(attrs.get("strides", [1, 1]))
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    if (len(kernel) != 2 or any(d != 1 for d in attrs.get("dilations", [1, 1]))
            or (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) != "NOTSET"
            or any(s is None or s <= 0 for s in shape[2:])):
        return None
    ceil = attrs.get("ceil_mode", 0) == 1
    edges = []
    for i, (size, k, s) in enumerate(zip(shape[2:], kernel, strides)):
        span = size + pads[i] + pads[i + 2]
        windows = (math.ceil if ceil else math.floor)((span - k) / s) + 1
        if ceil and (windows - 1) * s >= size + pads[i]:
            windows -= 1  # ONNX drops a last window that would start in the end padding
        after = max(0, (windows - 1) * s + k - size - pads[i])  # an unpadded floor pool then makes `windows`
        edges.append((pads[i], after, size))
    if all(b == 0 and a == 0 for b, a, _ in edges):
        return None
    return edges


REDUCE_OPS = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}


def positive_reduce_axes(path: Path, out: Path) -> tuple[Path, int]:
    """``path`` with the negative axes of every Reduce node (``axes`` attribute, or a constant ``axes``
    input from opset 18) written as positive ones in ascending order, saved to ``out``; and how many nodes changed.

    onnx2tf maps NCHW axes to NHWC ones, and for a ``ReduceMean(axes=[-1, -2])`` over a 1x1 map it reduces
    the batch too: the file then returns one row per batch (seen on a MobileNetV2-style net whose last
    stage reaches 1x1 at 16 px). Axes counted from the front, in order, are the same reduction and convert right."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    proto = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = proto.graph
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.value_info, *graph.input, *graph.output)
             if v.type.tensor_type.HasField("shape")}
    consts = {i.name: i for i in graph.initializer}
    count = 0
    for node in graph.node:
        if node.op_type not in REDUCE_OPS or not node.input or node.input[0] not in ranks:
            continue
        rank = ranks[node.input[0]]
        attr = next((a for a in node.attribute if a.name == "axes"), None)
        if attr is not None and any(v < 0 for v in attr.ints):
            fixed = sorted(v % rank for v in attr.ints)
            node.attribute.remove(attr)
            node.attribute.append(helper.make_attribute("axes", fixed))
            count += 1
        elif len(node.input) > 1 and node.input[1] in consts:
            axes = numpy_helper.to_array(consts[node.input[1]])
            if (axes < 0).any():
                name = f"{node.name or node.output[0]}_axes_positive"
                graph.initializer.append(numpy_helper.from_array(np.sort(axes % rank).astype(np.int64), name))
                node.input[1] = name
                count += 1
    if not count:
        return path, 0
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out, count
