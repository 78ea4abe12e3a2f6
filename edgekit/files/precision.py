"""The precision map of a file: per weighted layer, the precision its weights are *stored* at."""
from __future__ import annotations

from pathlib import Path

WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "QGemm", "MatMulNBits",
                "ConvInteger", "MatMulInteger", "Gather"}
_BITS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "int8": "int8", "uint8": "int8",
         "int4": "int4", "uint4": "int4", "int16": "int16", "uint16": "int16", "int32": "int32"}


def precision_map(path: Path) -> dict[str, str]:
    """Read back from the file itself (.onnx or .tflite)."""
    if Path(path).suffix == ".tflite":
        from .tflite_info import read_tflite
        return read_tflite(path).precision_map
    if Path(path).suffix == ".xml":
        return openvino_precision_map(path)
    if Path(path).suffix == ".pte":
        stored = pte_precision(path)  # the weights live inside XNNPACK's delegate blob
        return {"XNNPACK delegate": stored} if stored else {}
    return onnx_precision_map(path)


def pte_precision(path: Path) -> str | None:
    """The precision edgekit's exporter recorded in a .pte program (its ``edgekit_precision`` constant method)."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    if "edgekit_precision" not in program.method_names:
        return None
    return str(program.load_method("edgekit_precision").execute([])[0])


OV_WEIGHTED = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
               "Gather"}  # Gather: an embedding table (its data input, a constant of rank >= 2)


def openvino_precision_map(path: Path) -> dict[str, str]:
    """Per weighted op of an OpenVINO IR, the precision its weights are stored at: the constant behind it
    (through Convert/Reshape/Transpose/Subtract/Multiply decompression) and an 8-bit FakeQuantize on the way."""
    import openvino as ov

    model = ov.Core().read_model(str(path))
    names = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8", "i4": "int4", "u4": "int4"}
    out = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() not in OV_WEIGHTED:
            continue
        gather = op.get_type_name() == "Gather"
        node, quantized, decoded = op.input_value(0 if gather else 1).get_node(), False, False
        for _ in range(8):
            kind = node.get_type_name()
            if kind == "Constant":
                break
            decoded = decoded or kind in ("Convert", "FakeQuantize")
            if kind == "FakeQuantize":
                quantized = quantized or int(node.get_attributes().get("levels", 0)) <= 256
            if kind not in ("Convert", "Reshape", "Transpose", "Subtract", "Multiply", "FakeQuantize", "Unsqueeze"):
                node = None
                break
            node = node.input_value(0).get_node()
        if node is None or node.get_type_name() != "Constant":
            continue
        if gather and (len(node.get_output_shape(0)) < 2 or not (node.get_element_type().is_real() or decoded)):
            continue  # not an embedding table: a shape or index lookup (an integer table read as it is stored)
        stored = names.get(str(node.get_element_type().get_type_name()), "other")
        out[op.get_friendly_name()] = "int8" if quantized else stored
    return out


def onnx_precision_map(path: Path) -> dict[str, str]:
    """Per weighted layer (keyed by its weight's name), the precision its weights are *stored* at."""
    import onnx

    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}

    def stored(name: str) -> tuple[str, str] | None:
        """(weight name, precision) of the initializer behind ``name``, through dequant/cast nodes."""
        if name in inits:
            precision = _BITS.get(str(onnx.helper.tensor_dtype_to_np_dtype(inits[name].data_type)), "other")
            return name.removesuffix("_quantized").removesuffix(".weight"), precision
        node = producers.get(name)
        if node is not None and node.op_type in ("DequantizeLinear", "Cast", "Transpose", "Reshape") and node.input:
            return stored(node.input[0])
        return None

    result = {}
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in WEIGHTED_OPS:
            continue
        index = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "Gather": 0}.get(node.op_type, 1)
        if node.op_type == "MatMulNBits":
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            result[node.name or f"{node.op_type}_{i}"] = f"int{bits}"
            continue
        if len(node.input) > index:
            found = stored(node.input[index])
            if found is not None:
                result[found[0]] = found[1]
    return result
