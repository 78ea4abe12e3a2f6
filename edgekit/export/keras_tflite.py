"""Keras/SavedModel sources: TFLite through the TFLite converter, ONNX through tf2onnx."""
from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path

from ..errors import StageError, UsageError
from .job import Exported, ExportJob
from .tflite import _quiet, check_builtin_ops, import_tf, map_to_source


def export_keras(job: ExportJob) -> list[Exported]:
    tf = import_tf()
    out = []
    with tempfile.TemporaryDirectory(prefix="edgekit-keras-") as tmp:
        saved = _saved_model_dir(job, tmp, tf)
        float_mapping = None
        for precision in job.precisions:
            if precision not in ("fp32", "fp16"):
                from .tflite import integer_file
                out.append(integer_file(job, saved, precision, float_mapping, ""))
                continue
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            if precision == "fp16":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.target_spec.supported_types = [tf.float16]
            try:
                with _quiet(job.log):
                    blob = converter.convert()
            except Exception as exc:
                raise _conversion_error(exc) from None
            name = f"{job.model.name}.tflite" if precision == "fp32" else f"{job.model.name}_{precision}.tflite"
            target = job.folder / name
            target.write_bytes(blob)
            check_builtin_ops(target, "export tflite", "the TFLite converter")
            mapping = map_to_source(target, job.model.iospec)
            float_mapping = float_mapping or mapping
            out.append(Exported(target, "tflite", precision, {"exporter": f"tf.lite.TFLiteConverter {tf.__version__}"},
                                mapping))
    return out


def export_keras_onnx(job: ExportJob, out: Path) -> dict:
    tf = import_tf()
    try:
        import tf2onnx
    except ImportError:
        raise UsageError("ONNX export of Keras sources needs tf2onnx: pip install tf2onnx (or pass --formats tflite)") from None
    spec = tuple(tf.TensorSpec([None if isinstance(d, str) else d for d in t.shape], t.dtype, name=t.name)
                 for t in job.model.iospec.inputs)
    try:
        with _quiet(job.log):
            if job.model.loader == "keras":
                tf2onnx.convert.from_keras(job.model.module, input_signature=spec, opset=17, output_path=str(out))
            else:
                fn = job.model.module.fn
                tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=str(out))
    except Exception as exc:
        raise StageError("export onnx", f"tf2onnx {tf2onnx.__version__}: {type(exc).__name__}: {str(exc)[:300]}") from None
    return {"exporter": f"tf2onnx {tf2onnx.__version__}", "opset": 17, "dynamic_batch": job.model.iospec.batch_dynamic}


def _saved_model_dir(job: ExportJob, tmp: str, tf) -> str:
    if job.model.loader == "saved_model":
        return job.model.meta["keras_path"]
    target = str(Path(tmp) / "saved_model")
    with _quiet(job.log), contextlib.suppress(TypeError):
        job.model.module.export(target, format="tf_saved_model", verbose=False)
        return target
    job.model.module.export(target)
    return target


def _conversion_error(exc: Exception) -> Exception:
    """Unsupported ops are the user's to fix (exit 2, naming them); anything else is a stage failure."""
    text = str(exc)
    ops = sorted(set(re.findall(r'"?\btf\.([A-Z][A-Za-z0-9]*)"?\(', text)))  # TF ops left unconverted
    if ops:
        return UsageError(f"the Keras model uses op(s) TFLite does not support: {', '.join(ops)}; "
                          "replace them with supported layers")
    first = next((line.strip() for line in text.splitlines() if "error" in line.lower()), text.splitlines()[0] if text else "")
    return StageError("export tflite", f"TFLite converter: {first[:300]}")
