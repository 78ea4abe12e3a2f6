"""Runners: ``run(inputs) -> outputs`` over one runtime, keyed by tensor name (``base.Runner``).

Validation, benchmarking and apps all go through these. A runner built with a *mapping* (the
file's IOSpec tied to the source model's tensors) takes and returns the source's tensors.
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UsageError
from ..core.iospec import IOSpec
from ..core.model import Model
from .base import Runner

SUFFIX_RUNTIME = {".onnx": "onnxruntime", ".tflite": "litert", ".xml": "openvino", ".pte": "executorch"}
RUNTIMES = ("onnxruntime", "litert", "tflm", "openvino", "executorch")


def runtime_for(path: str | Path, runtime: str | None = None) -> str:
    path = Path(path)
    runtime = runtime or SUFFIX_RUNTIME.get(path.suffix)
    if runtime is None:
        raise UsageError(f"{path}: no runtime for '{path.suffix}' files; supported: {', '.join(SUFFIX_RUNTIME)}")
    return runtime


def import_runtime(runtime: str) -> None:
    """Import a runtime's library up front (the bench worker does, so RSS growth is the model's)."""
    if runtime == "onnxruntime":
        import onnxruntime  # noqa: F401
    elif runtime == "litert":
        from .litert import import_litert
        import_litert()
    elif runtime == "tflm":
        from .tflm import import_tflm
        import_tflm()
    elif runtime == "openvino":
        from .openvino import import_openvino
        import_openvino()
    elif runtime == "executorch":
        from .executorch import import_executorch
        import_executorch()


def open_runner(path: str | Path, runtime: str | None = None, threads: int = 1, mapping: IOSpec | None = None) -> Runner:
    """The runner for a deployable file, chosen by its runtime (or its suffix)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"file {path} not found; check the path")
    runtime = runtime_for(path, runtime)
    if runtime == "onnxruntime":
        from .ort import OrtRunner
        return OrtRunner(path, threads=threads)
    if runtime == "litert":
        from .litert import LiteRTRunner
        return LiteRTRunner(path, threads=threads, mapping=mapping)
    if runtime == "tflm":
        from .tflm import TflmRunner
        return TflmRunner(path, mapping=mapping)
    if runtime == "openvino":
        from .openvino import OpenVINORunner
        return OpenVINORunner(path, threads=threads, mapping=mapping)
    if runtime == "executorch":
        from .executorch import ExecuTorchRunner
        return ExecuTorchRunner(path, threads=threads, mapping=mapping)
    raise UsageError(f"{path}: unknown runtime '{runtime}'; known: {', '.join(RUNTIMES)}")


def reference_runner(model: Model, threads: int = 1) -> Runner:
    """The runner that computes the source model's own outputs, by the model's kind."""
    if model.kind == "torch":
        from .torch_runner import TorchRunner
        return TorchRunner(model.module, model.iospec, threads)
    if model.kind == "keras":
        from .keras import KerasRunner
        return KerasRunner(model.module, model.iospec, threads)
    from .ort import OrtRunner
    return OrtRunner(model.onnx_path, threads=threads)
