"""Reading ONNX files: load with a clear error, and the IOSpec of a graph."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UsageError
from ..core.iospec import IOSpec, TensorSpec, default_layout


def load_onnx(path: str | Path):
    """The checked ModelProto; a corrupt or truncated file is a UsageError naming it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file {path} not found; check the path")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:
        raise UsageError(f"{path} is not a valid ONNX model (truncated or corrupt?): "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}; re-export it") from None
    return proto


def iospec_from_onnx(path_or_proto) -> IOSpec:
    import onnx

    proto = path_or_proto if isinstance(path_or_proto, onnx.ModelProto) else onnx.load(str(path_or_proto), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}

    def spec(value_info) -> TensorSpec:
        ttype = value_info.type.tensor_type
        dims = []
        for i, d in enumerate(ttype.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or ("batch" if i == 0 else f"{value_info.name}_dim{i}"))
        dtype = str(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
        shape = tuple(dims)
        return TensorSpec(value_info.name, shape, dtype, default_layout(shape, dtype))

    inputs = tuple(spec(v) for v in proto.graph.input if v.name not in inits)
    outputs = tuple(spec(v) for v in proto.graph.output)
    return IOSpec(inputs, outputs)


def initializer_integers(path) -> dict:
    """The int4/int8 initializers of an ONNX file (quantized weights), by name, as int32 arrays."""
    import onnx
    from onnx import numpy_helper

    kinds = (onnx.TensorProto.INT4, onnx.TensorProto.INT8)
    proto = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t).astype("int32") for t in proto.graph.initializer if t.data_type in kinds}
