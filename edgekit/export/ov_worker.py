"""Subprocess entry point for OpenVINO's converter and NNCF: ``python -m edgekit.export.ov_worker '<json>'``.

They run in their own process (openvino_client.ov_call) whose environment turns their usage telemetry off
(``CI=true`` for OpenVINO's tools, ``NNCF_CI=1`` for NNCF): a build never reaches the network, and library
code never edits the build process's own environment. Prints one JSON line.
"""
from __future__ import annotations

import json
import sys

HINT_KEY = ["edgekit", "inference_precision_hint"]


def _save(ov, model, out: str, hint: str, fp16: bool) -> None:
    model.set_rt_info(hint, HINT_KEY)
    ov.save_model(model, out, compress_to_fp16=fp16)


def convert(args: dict) -> dict:
    import openvino as ov

    model = ov.convert_model(args["onnx"])
    _save(ov, model, args["out"], args.get("hint", "f32"), bool(args.get("fp16")))
    return {"version": ov.get_version().split("-")[0], "ops": len(model.get_ops())}


def recompress(args: dict) -> dict:
    """An IR saved again with fp16-compressed weights (or not) and a precision hint."""
    import openvino as ov

    model = ov.Core().read_model(args["src"])
    _save(ov, model, args["out"], args["hint"], bool(args.get("fp16")))
    return {"version": ov.get_version().split("-")[0]}


def quantize(args: dict) -> dict:
    """NNCF post-training int8 on the calibration samples (one per inference), ``ignored`` nodes left float."""
    import numpy as np
    import nncf
    import openvino as ov

    model = ov.Core().read_model(args["src"])
    with np.load(args["calibration"]) as npz:
        arrays = {name: npz[name] for name in npz.files}
    names = [p.get_any_name() for p in model.inputs]
    n = len(arrays[names[0]])
    samples = [{name: arrays[name][i:i + 1] for name in names} for i in range(n)]
    kwargs = {"subset_size": n}
    if args.get("transformer"):
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if args.get("ignored"):
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(args["ignored"]), validate=False)
    quantized = nncf.quantize(model, nncf.Dataset(samples), **kwargs)
    _save(ov, quantized, args["out"], args.get("hint", "f32"), False)
    fq = [op.get_friendly_name() for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize"]
    return {"version": ov.get_version().split("-")[0], "nncf": nncf.__version__, "fake_quantize": len(fq),
            "samples": n, "model_type": "TRANSFORMER" if args.get("transformer") else "default"}


def weighted_ops(args: dict) -> dict:
    """The IR's weighted ops (convolutions, matmuls, embeddings): the ones NNCF quantizes."""
    import openvino as ov

    model = ov.Core().read_model(args["src"])
    kinds = {"Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "Gather"}
    return {"ops": [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in kinds]}


OPS = {"convert": convert, "recompress": recompress, "quantize": quantize, "weighted_ops": weighted_ops}


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    try:
        result = OPS[request["op"]](request["args"])
    except ImportError as exc:
        print(json.dumps({"missing": exc.name}))
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the build, which names the stage
        print(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"}))
        return 0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
