"""Runners: ``run(inputs) -> outputs`` over one runtime, keyed by tensor name.

Validation, benchmarking and apps all go through these.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError

SUFFIX_RUNTIME = {".onnx": "onnxruntime"}


def open_runner(path: str | Path, runtime: str | None = None, threads: int = 1):
    """The runner for a deployable file, chosen by its runtime (or its suffix)."""
    path = Path(path)
    runtime = runtime or SUFFIX_RUNTIME.get(path.suffix)
    if runtime == "onnxruntime":
        from .ort import OrtRunner
        return OrtRunner(path, threads=threads)
    raise UsageError(f"{path}: no runtime for '{path.suffix}' files; supported: {', '.join(SUFFIX_RUNTIME)}")
