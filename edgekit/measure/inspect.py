"""inspect_file(): ops, parameters, size and IO of an ONNX or TFLite file."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UsageError


def inspect_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"file {path} not found; check the path")
    if path.suffix == ".onnx":
        from ..files.onnx_io import iospec_from_onnx, load_onnx

        proto = load_onnx(path)
        ops = Counter(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}"
                      for n in proto.graph.node)
        index_types = (6, 7)  # INT32, INT64: shape/axes constants are not parameters
        params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.data_type not in index_types)
        spec = iospec_from_onnx(proto)
        opset = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        extra = {"opset": opset, "producer": f"{proto.producer_name} {proto.producer_version}".strip()}
    elif path.suffix == ".tflite":
        from ..runtimes.litert import LiteRTRunner
        from ..files.tflite_info import read_tflite

        info = read_tflite(path)
        ops, params = Counter(info.ops), info.params
        spec = LiteRTRunner(path).file_spec
        extra = {"weight_precisions": dict(Counter(info.precision_map.values()))}
    elif path.suffix == ".xml":
        ops, params, spec, extra = _openvino(path)
    elif path.suffix == ".pte":
        ops, params, spec, extra = _executorch(path)
    else:
        raise UsageError(f"{path}: cannot inspect '{path.suffix}' files; give an .onnx, .tflite, .xml (OpenVINO IR) or "
                         ".pte (ExecuTorch) file")
    from ..core.artifact import file_digest

    return {"file": str(path), "bytes": file_digest(path)[1], "params": params, "ops": dict(ops.most_common()),
            "iospec": spec.to_dict(), **extra}


def _openvino(path: Path):
    from ..files.precision import openvino_precision_map
    from ..runtimes.openvino import OpenVINORunner, import_openvino, stored_hint

    ov = import_openvino()
    try:
        model = ov.Core().read_model(str(path))
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"{path}: OpenVINO cannot read it ({str(exc).splitlines()[0][:200]})") from None
    ops = Counter(op.get_type_name() for op in model.get_ops() if op.get_type_name() not in ("Parameter", "Result"))
    params = sum(int(np.prod(list(op.get_output_shape(0)))) for op in model.get_ops()
                 if op.get_type_name() == "Constant" and str(op.get_element_type().get_type_name()) in
                 ("f32", "f16", "bf16", "i8", "u8", "i4", "u4"))
    spec = OpenVINORunner(path, precision_hint="f32").file_spec
    return ops, params, spec, {"inference_precision_hint": stored_hint(model) or "not set (OpenVINO's default)",
                               "weight_precisions": dict(Counter(openvino_precision_map(path).values())),
                               "weights_file": path.with_suffix(".bin").name}


def _executorch(path: Path):
    """Ops of the program's execution plan: the XNNPACK delegate calls and any op left to portable kernels."""
    from ..runtimes.executorch import ExecuTorchRunner, import_executorch

    import_executorch(lowering=True)
    from executorch.exir._serialize._program import deserialize_pte_binary

    spec = ExecuTorchRunner(path).file_spec
    program = deserialize_pte_binary(path.read_bytes())
    program = getattr(program, "program", program)
    plan = next(p for p in program.execution_plan if p.name == "forward")
    ops, delegates = Counter(), Counter()
    for chain in plan.chains:
        for instr in chain.instructions:
            args = instr.instr_args
            if hasattr(args, "op_index"):
                op = plan.operators[args.op_index]
                ops[op.name + (f".{op.overload}" if op.overload else "")] += 1
            elif hasattr(args, "delegate_index"):
                d = plan.delegates[args.delegate_index]
                delegates[d.id] += 1
                ops[f"delegate:{d.id}"] += 1
    return ops, None, spec, {"delegates": dict(delegates), "non_delegated_ops": sum(
        n for k, n in ops.items() if not k.startswith("delegate:"))}
