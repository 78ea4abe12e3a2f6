"""Keras/SavedModel sources: TFLite through the TFLite converter, ONNX through tf2onnx (both in the
converter worker, which loads .keras files with safe_mode=True)."""
from __future__ import annotations

from pathlib import Path

from ..core.results import ExportInfo
from .job import Exported, ExportJob
from .tflite import check_builtin_ops, map_to_source


def saved_model_of(job: ExportJob) -> Path:
    """The SavedModel the TFLite converter reads: the source folder itself, or one exported from the .keras file."""
    if job.model.loader == "saved_model":
        return Path(job.model.meta["keras_path"]).resolve()
    target = (job.scratch / f"saved_model-{job.model.name}").resolve()
    if not (target / "saved_model.pb").is_file():
        job.tf.call("keras_saved_model", "export tflite", keras_path=str(Path(job.model.meta["keras_path"]).resolve()),
                    out_dir=str(target))
    return target


def export_keras_tflite(job: ExportJob) -> list[Exported]:
    saved = saved_model_of(job)
    target = job.folder / f"{job.model.name}.tflite"
    made = job.tf.call("convert", "export tflite", saved_model=str(saved), precision="fp32", out=str(target.resolve()),
                       users_graph=True)
    check_builtin_ops(target, "export tflite", "the TFLite converter")
    info = ExportInfo(f"tf.lite.TFLiteConverter {made['version']}")
    return [Exported(target, "tflite", "fp32", info, map_to_source(target, job.model.iospec), saved_model=saved)]


def export_keras_onnx(job: ExportJob) -> list[Exported]:
    out = job.folder / f"{job.model.name}.onnx"
    inputs = [(t.name, [None if isinstance(d, str) else d for d in t.shape], t.dtype) for t in job.model.iospec.inputs]
    made = job.tf.call("tf2onnx", "export onnx", loader=job.model.loader, inputs=inputs, out=str(out.resolve()),
                       path=str(Path(job.model.meta["keras_path"]).resolve()))
    info = ExportInfo(f"tf2onnx {made['version']}", details={"opset": 17,
                                                             "dynamic_batch": job.model.iospec.batch_dynamic})
    return [Exported(out, "onnx", "fp32", info)]
