"""The quantization passes that do not search: fp16 ONNX, and fp16/int8/int16x8 TFLite from the SavedModel
the TFLite exporter left behind (the model is not converted a second time)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..data import Split
from ..errors import StageError, UsageError
from ..export.job import Exported, PassContext
from ..export.tflite import check_builtin_ops, map_to_source
from ..iospec import IOSpec
from ..results import ExportInfo
from ..runtimes.mapping import to_file


def onnx_fp16(src: Exported, ctx: PassContext) -> Exported:
    from .onnx_quant import to_fp16

    target = ctx.folder / f"{ctx.name}_fp16.onnx"
    details = to_fp16(src.path, target, keep_io_types=not ctx.options.get("fp16_io", False))
    return Exported(target, "onnx", "fp16", ExportInfo(details.pop("quantizer"), made_from=src.path.name,
                                                       details=details))


def calibration_npz(calibration: Split, mapping: IOSpec, path: Path) -> Path:
    """The calibration split keyed by the file's input names, in the file's layout (e.g. NHWC) and dtype
    (token ids stay integers)."""
    arrays = {t.name: np.ascontiguousarray(to_file(t, calibration.inputs[t.source_name or t.name]), dtype=t.dtype)
              for t in mapping.inputs}
    np.savez(path, **arrays)
    return path


def tflite_converted(precision: str):
    """The pass that writes ``<name>_<precision>.tflite`` with the TFLite converter."""
    def run(src: Exported, ctx: PassContext) -> Exported:
        if src.saved_model is None:
            raise StageError(f"quantize tflite {precision}", f"{src.path.name} has no SavedModel to convert")
        calibration = None
        int8_io = bool(ctx.options.get("int8_io")) and precision == "int8"
        if precision in ("int8", "int16x8"):
            if ctx.data.calibration is None or len(ctx.data.calibration) == 0:
                raise UsageError("integer TFLite files need calibration samples: pass --data")
            calibration = str(calibration_npz(ctx.data.calibration, src.mapping,
                                              ctx.scratch / f"calib-{ctx.name}-{precision}.npz").resolve())
        target = ctx.folder / f"{ctx.name}_{precision}.tflite"
        made = ctx.tf.call("convert", f"quantize tflite {precision}", saved_model=str(src.saved_model),
                           precision=precision, out=str(target.resolve()), calibration=calibration, int8_io=int8_io)
        check_builtin_ops(target, f"quantize tflite {precision}", "the TFLite converter")
        details = {}
        if calibration is not None:
            details = {"quantization": "full integer" if precision == "int8" else "int16 activations, int8 weights",
                       "representative_samples": len(ctx.data.calibration), "int8_io": int8_io}
        info = ExportInfo(f"{src.info.exporter} + tf.lite.TFLiteConverter {made['version']}", made_from=src.path.name,
                          details=details)
        return replace(src, path=target, precision=precision, info=info,
                       mapping=map_to_source(target, ctx.iospec), validation=None)
    return run
