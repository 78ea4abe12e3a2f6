"""inspect_file(): ops, parameters, size and IO of an ONNX or TFLite file."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError


def inspect_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"file {path} not found; check the path")
    if path.suffix == ".onnx":
        from .onnx_io import iospec_from_onnx, load_onnx

        proto = load_onnx(path)
        ops = Counter(n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op_type}"
                      for n in proto.graph.node)
        index_types = (6, 7)  # INT32, INT64: shape/axes constants are not parameters
        params = sum(int(np.prod(i.dims)) for i in proto.graph.initializer if i.data_type not in index_types)
        spec = iospec_from_onnx(proto)
        opset = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        extra = {"opset": opset, "producer": f"{proto.producer_name} {proto.producer_version}".strip()}
    elif path.suffix == ".tflite":
        from .runtimes.litert import LiteRTRunner
        from .tflite_info import read_tflite

        info = read_tflite(path)
        ops, params = Counter(info.ops), info.params
        spec = LiteRTRunner(path).file_spec
        extra = {"weight_precisions": dict(Counter(info.precision_map.values()))}
    else:
        raise UsageError(f"{path}: cannot inspect '{path.suffix}' files; give an .onnx or .tflite file")
    return {"file": str(path), "bytes": path.stat().st_size, "params": params, "ops": dict(ops.most_common()),
            "iospec": spec.to_dict(), **extra}
