"""Runners: ``run(inputs) -> outputs`` over one runtime, keyed by tensor name.

Validation, benchmarking and apps all go through these.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError

SUFFIX_RUNTIME = {".onnx": "onnxruntime"}


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


def open_runner(path: str | Path, runtime: str | None = None, threads: int = 1):
    """The runner for a deployable file, chosen by its runtime (or its suffix)."""
    path = Path(path)
    runtime = runtime_for(path, runtime)
    if runtime == "onnxruntime":
        from .ort import OrtRunner
        return OrtRunner(path, threads=threads)
    raise UsageError(f"{path}: no runtime for '{path.suffix}' files; supported: {', '.join(SUFFIX_RUNTIME)}")
