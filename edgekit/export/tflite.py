"""TFLite export: the reference ONNX graph through onnx2tf, run in the converter worker. Never touches
the network.

onnx2tf fetches sample images from the internet when every input is a 4-D, 3-channel tensor
with a static batch <= 20 (``download_test_image_data``). edgekit hands it the build's own
calibration samples instead, so the conversion stays offline whatever the model's shape. The
SavedModel onnx2tf leaves behind is kept for the quantization passes, so the model is converted once.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import StageError
from ..iospec import IOSpec, match_layout
from ..results import ExportInfo
from .job import Exported, ExportJob


def export_tflite_onnx2tf(job: ExportJob) -> list[Exported]:
    """fp32 .tflite for torch and ONNX sources, from the reference ONNX graph."""
    if job.reference_onnx is None:
        raise StageError("export tflite", "no reference ONNX graph to convert")
    work = job.scratch / f"onnx2tf-{job.model.name}"
    samples = _offline_samples(job, work.with_suffix(".npz"))
    made = job.tf.call("onnx2tf", "export tflite", onnx=str(job.reference_onnx.resolve()), out_dir=str(work.resolve()),
                       samples=samples)
    target = job.folder / f"{job.model.name}.tflite"
    shutil.copyfile(made["fp32"], target)
    check_builtin_ops(target, "export tflite", "onnx2tf")
    info = ExportInfo(f"onnx2tf {made['version']}", made_from=job.reference_onnx.name)
    return [Exported(target, "tflite", "fp32", info, map_to_source(target, job.model.iospec),
                     saved_model=Path(made["saved_model"]))]


def check_builtin_ops(path: Path, stage: str, converter: str) -> None:
    """A file that needs TF Select (Flex) or custom ops will not run on LiteRT's builtin runtime: say which."""
    from ..tflite_info import read_tflite

    custom = sorted({op.removeprefix("CUSTOM:") for op in read_tflite(path).ops if op.startswith("CUSTOM:")})
    if custom:
        raise StageError(stage, f"{converter} emitted {path.name} with ops LiteRT's builtin runtime cannot run "
                                f"({', '.join(custom)}); the model needs layers with TFLite builtin equivalents")


def map_to_source(path: Path, source: IOSpec) -> IOSpec:
    """The .tflite file's IOSpec with each tensor tied to the source tensor it carries (name, NCHW->NHWC)."""
    from ..runtimes.litert import LiteRTRunner

    own = LiteRTRunner(path).file_spec
    ins = _pair(list(own.inputs), list(source.inputs), by_name=True)
    outs = _pair(list(own.outputs), list(source.outputs), by_name=False)

    def tie(pairs):
        tied = []
        for f, s in pairs:
            try:
                perm = match_layout(f, s)
            except ValueError as exc:
                raise StageError("export tflite", f"cannot match {path.name} to the source model: {exc}") from None
            tied.append(replace(f, source_name=s.name if s.name != f.name else None, source_perm=perm,
                                layout="NHWC" if perm and len(perm) == 4 else (s.layout if perm is None else None)))
        return tuple(tied)
    return IOSpec(tie(ins), tie(outs))


def _pair(file_tensors, source_tensors, by_name: bool):
    if len(file_tensors) != len(source_tensors):
        raise StageError("export tflite", f"the file has {len(file_tensors)} tensors where the source has {len(source_tensors)}")

    def clean(name: str) -> str:
        return re.sub(r"[^0-9a-zA-Z]", "_", name.split(":")[0]).removeprefix("serving_default_").lower()
    if by_name:
        lookup = {clean(f.name): f for f in file_tensors}
        if all(clean(s.name) in lookup for s in source_tensors):
            return [(lookup[clean(s.name)], s) for s in source_tensors]

    def index(f) -> int:  # TF names outputs Identity, Identity_1, ... in the source's order
        m = re.search(r"_(\d+)$", f.name.split(":")[0])
        return int(m.group(1)) if m and f.name.startswith(("Identity", "StatefulPartitionedCall")) else 0
    ordered = sorted(file_tensors, key=index) if not by_name else file_tensors
    return list(zip(ordered, source_tensors))


def _offline_samples(job: ExportJob, path: Path) -> str | None:
    """The build's calibration samples in NHWC, for onnx2tf to use instead of downloading images."""
    spec = job.model.iospec.inputs[0]
    if job.calibration is None or spec.name not in job.calibration.inputs:
        return None
    x = job.calibration.inputs[spec.name].astype(np.float32)
    if x.ndim == 4 and spec.layout == "NCHW":
        x = np.transpose(x, (0, 2, 3, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x)
    return str(path.resolve())
