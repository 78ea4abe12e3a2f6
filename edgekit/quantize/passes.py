"""The quantization passes that do not search: fp16 ONNX, and fp16/int8/int16x8 TFLite from the SavedModel
the TFLite exporter left behind (the model is not converted a second time)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.data import Split
from ..core.errors import StageError, UsageError
from ..export.job import Exported, PassContext
from ..export.tflite import check_builtin_ops, map_to_source
from ..core.iospec import IOSpec
from ..core.results import ExportInfo
from ..runtimes.mapping import to_file


def onnx_fp16(src: Exported, ctx: PassContext) -> Exported:
    from .onnx_ort import to_fp16

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
        if src.saved_model is None:  # made by litert-torch: ai-edge-quantizer works on the .tflite itself
            return _quantized_flatbuffer(src, ctx, precision)
        calibration = None
        int8_io = bool(ctx.options.get("int8_io")) and precision == "int8"
        if precision in ("int8", "int16x8"):
            if ctx.data.calibration is None or len(ctx.data.calibration) == 0:
                raise UsageError("integer TFLite files need calibration samples: pass --data")
            calibration = str(calibration_npz(ctx.data.calibration, src.mapping,
                                              ctx.scratch / f"calib-{ctx.name}-{precision}.npz").resolve())
        target = ctx.folder / f"{ctx.name}_{precision}.tflite"
        try:
            made = ctx.tf.call("convert", f"quantize tflite {precision}", saved_model=str(src.saved_model),
                               precision=precision, out=str(target.resolve()), calibration=calibration,
                               int8_io=int8_io)
        except StageError as exc:  # the converter's quantizer crashes on some graphs (recurrent layers)
            if precision not in RECIPES or "crashed" not in str(exc):
                raise
            target.unlink(missing_ok=True)
            entry = _quantized_flatbuffer(src, ctx, precision)
            return replace(entry, info=replace(entry.info, notes=(
                f"the TFLite converter crashed quantizing this graph ({str(exc).split(': ', 1)[-1][:160]}); "
                f"made by ai-edge-quantizer ({RECIPES[precision]}) from {src.path.name} instead",)))
        check_builtin_ops(target, f"quantize tflite {precision}", "the TFLite converter")
        details = {}
        if calibration is not None:
            details = {"quantization": "full integer" if precision == "int8" else "int16 activations, int8 weights",
                       "representative_samples": len(ctx.data.calibration), "int8_io": int8_io}
        info = ExportInfo(f"{src.info.exporter} + tf.lite.TFLiteConverter {made['version']}", made_from=src.path.name,
                          details=details)
        return replace(src, path=target, precision=precision, info=info,
                       mapping=map_to_source(target, ctx.iospec, like=src.mapping), validation=None)
    return run


# ai-edge-quantizer recipes for files without a SavedModel. int8 is dynamic-range (int8 weights, activations
# quantized at run time): for transformer encoders it is the fastest and most faithful int8 LiteRT runs.
RECIPES = {"int8": "dynamic_wi8_afp32", "int16x8": "static_wi8_ai16"}


def _quantized_flatbuffer(src: Exported, ctx: PassContext, precision: str) -> Exported:
    stage = f"quantize tflite {precision}"
    if precision not in RECIPES:
        raise StageError(stage, f"{src.path.name} was made by {src.info.exporter}, without a SavedModel; "
                                f"{precision} needs the TFLite converter's SavedModel (only "
                                f"{', '.join(RECIPES)} work on the flatbuffer)")
    recipe = RECIPES[precision]
    calibration = None
    if recipe.startswith("static"):
        calibration = str(_signature_npz(ctx.data.calibration, src, ctx.scratch / f"calib-{ctx.name}-{precision}.npz"))
    target = ctx.folder / f"{ctx.name}_{precision}.tflite"
    made = ctx.tf.call("aeq", stage, src=str(src.path.resolve()), out=str(target.resolve()), recipe=recipe,
                       calibration=calibration)
    kind = ("dynamic-range int8: int8 weights, activations quantized at run time" if recipe.startswith("dynamic")
            else "int16 activations, int8 weights")
    info = ExportInfo(f"{src.info.exporter} + ai-edge-quantizer {made['version']} ({recipe})", made_from=src.path.name,
                      details={"quantization": kind, "recipe": recipe})
    return replace(src, path=target, precision=precision, info=info,
                   mapping=map_to_source(target, ctx.iospec, like=src.mapping), validation=None)


def _signature_npz(calibration: Split, src: Exported, path: Path) -> Path:
    """The calibration split keyed by the file's signature input names (ai-edge-quantizer calibrates by
    signature), in the file's layout and dtype."""
    from ..runtimes.litert import LiteRTRunner

    names = LiteRTRunner(src.path).signature_names
    arrays = {names.get(t.name, t.name): np.ascontiguousarray(to_file(t, calibration.inputs[t.source_name or t.name]),
                                                              dtype=t.dtype) for t in src.mapping.inputs}
    np.savez(path, **arrays)
    return path
