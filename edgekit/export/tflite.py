"""TFLite export: the reference ONNX graph through onnx2tf (fp32, fp16), or a Keras model through
the TFLite converter. Never touches the network.

onnx2tf fetches sample images from the internet when every input is a 4-D, 3-channel tensor
with a static batch <= 20 (``download_test_image_data``). edgekit hands it the build's own
calibration samples instead, so the conversion stays offline whatever the model's shape.
"""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import StageError, UsageError
from ..iospec import IOSpec, match_layout
from .job import Exported, ExportJob

ONNX2TF_SUFFIX = {"fp32": "_float32.tflite", "fp16": "_float16.tflite"}


def import_tf():
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ start-up chatter (CUDA probing) stays quiet
    try:
        from ..native_output import capture_fd2
        capture_fd2(lambda: __import__("tensorflow"))  # absl/CUDA probing notes go to fd 2 at import
        import tensorflow as tf
    except ImportError:
        raise UsageError("TFLite export needs TensorFlow: pip install tensorflow tf-keras onnx2tf "
                         "(or pass --formats onnx)") from None
    return tf


def export_tflite(job: ExportJob) -> list[Exported]:
    if job.model.kind == "keras":
        from .keras_tflite import export_keras
        return export_keras(job)
    if job.reference_onnx is None:
        raise StageError("export tflite", "no reference ONNX graph to convert")
    import_tf()
    try:
        import onnx2tf
    except ImportError as exc:
        raise UsageError(f"TFLite export needs onnx2tf and its helpers ({exc.name} is missing): "
                         "pip install onnx2tf onnx-graphsurgeon sng4onnx sne4onnx psutil") from None
    outputs = []
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx2tf-") as tmp:
        source = Path(tmp) / job.reference_onnx.name  # onnx2tf rewrites its input in place (op names)
        shutil.copyfile(job.reference_onnx, source)
        with _offline_samples(job), _quiet(job.log), _cwd(tmp):
            try:
                onnx2tf.convert(input_onnx_file_path=str(source), output_folder_path=tmp,
                                not_use_onnxsim=True, non_verbose=False, verbosity="info")
            except SystemExit as exc:  # onnx2tf exits on conversion errors after logging them
                raise StageError("export tflite", f"onnx2tf stopped (exit {exc.code}): {_last_error(job.log)}") from None
            except Exception as exc:
                raise StageError("export tflite", f"onnx2tf: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        float_mapping = None
        for precision in job.precisions:
            if precision not in ONNX2TF_SUFFIX:
                outputs.append(integer_file(job, tmp, precision, float_mapping, f"onnx2tf {onnx2tf.__version__} + "))
                continue
            produced = Path(tmp) / (job.reference_onnx.stem + ONNX2TF_SUFFIX[precision])
            if not produced.is_file():
                raise StageError("export tflite", f"onnx2tf wrote no {produced.name}: {_last_error(job.log)}")
            name = f"{job.model.name}.tflite" if precision == "fp32" else f"{job.model.name}_{precision}.tflite"
            target = job.folder / name
            shutil.move(str(produced), target)
            check_builtin_ops(target, "export tflite", "onnx2tf")
            mapping = map_to_source(target, job.model.iospec)
            float_mapping = float_mapping or mapping
            outputs.append(Exported(target, "tflite", precision, {"exporter": f"onnx2tf {onnx2tf.__version__}",
                                                                 "from": job.reference_onnx.name}, mapping))
    return outputs


def integer_file(job: ExportJob, saved_model: str, precision: str, float_mapping, how: str) -> Exported:
    """An int8 / int16x8 .tflite from the SavedModel the conversion left behind."""
    import tensorflow as tf

    from ..quantize.tflite_quant import convert_integer

    if float_mapping is None:
        raise StageError("quantize tflite", "integer TFLite files need the fp32 file first")
    if job.calibration is None:
        raise UsageError("integer TFLite files need calibration samples: pass --data")
    with _quiet(job.log):
        blob = convert_integer(saved_model, precision, job.calibration, float_mapping, job.int8_io)
    target = job.folder / f"{job.model.name}_{precision}.tflite"
    target.write_bytes(blob)
    check_builtin_ops(target, "quantize tflite", "the TFLite converter")
    mapping = map_to_source(target, job.model.iospec)
    info = {"exporter": f"{how}tf.lite.TFLiteConverter {tf.__version__}", "quantization": "full integer" if
            precision == "int8" else "int16 activations, int8 weights", "representative_samples": len(job.calibration),
            "int8_io": bool(job.int8_io and precision == "int8")}
    return Exported(target, "tflite", precision, info, mapping)


def check_builtin_ops(path: Path, stage: str, converter: str) -> None:
    """A file that needs TF Select (Flex) or custom ops will not run on LiteRT's builtin runtime: say which."""
    from ..tflite_info import read_tflite

    custom = sorted({op.removeprefix("CUSTOM:") for op in read_tflite(path).ops if op.startswith("CUSTOM:")})
    if custom:
        raise StageError(stage, f"{converter} emitted {path.name} with ops LiteRT's builtin runtime cannot run "
                                f"({', '.join(custom)}); the model needs layers with TFLite builtin equivalents")


def map_to_source(path: Path, source: IOSpec) -> IOSpec:
    """The .tflite file's IOSpec with each tensor tied to the source tensor it carries (name, NCHW->NHWC)."""
    from dataclasses import replace

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


@contextlib.contextmanager
def _offline_samples(job: ExportJob):
    """Replace onnx2tf's sample-image download with the build's own calibration data (NHWC)."""
    import onnx2tf.onnx2tf as o2t
    from onnx2tf.utils import common_functions as cf

    def local_samples() -> np.ndarray:
        spec = job.model.iospec.inputs[0]
        if job.calibration is not None and spec.name in job.calibration.inputs:
            x = job.calibration.inputs[spec.name].astype(np.float32)
        else:
            x = np.zeros(spec.concrete_shape(20), np.float32)
        if x.ndim == 4 and spec.layout == "NCHW":
            x = np.transpose(x, (0, 2, 3, 1))
        return np.resize(x, (max(20, len(x)),) + x.shape[1:])
    saved = (o2t.download_test_image_data, cf.download_test_image_data)
    o2t.download_test_image_data = cf.download_test_image_data = local_samples
    try:
        yield
    finally:
        o2t.download_test_image_data, cf.download_test_image_data = saved


@contextlib.contextmanager
def _quiet(log: io.StringIO):
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


@contextlib.contextmanager
def _cwd(path: str):
    import os
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _last_error(log: io.StringIO) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", log.getvalue())
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "Error" in line]
    return (errors[-1] if errors else (lines[-1] if lines else "no message"))[:300]
