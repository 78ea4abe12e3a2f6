"""Validation: run an exported file in its own runtime on the validation split and compare it
with the source model, per named output (shape, then tolerance), collecting every failure."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Data
from .errors import ValidationFailed
from .formats import Tolerance
from .metrics import PRIMARY, agreement, metric_drop, task_metrics
from .model import Model
from .results import ValidationResult
from .runtimes import open_runner, reference_runner
from .runtimes.base import run_batched


@dataclass(frozen=True)
class Reference:
    """The source model's outputs and metrics on the validation split, computed once per build."""
    outputs: dict[str, np.ndarray]
    metrics: dict[str, float]
    task: str
    primary_output: str
    # When the exported model is a compressed twin of the source: ``outputs`` are the twin's (what the
    # files must match within tolerance), ``metrics`` and ``origin_outputs`` the source's (what a drop
    # is measured against, so a file's drop includes what pruning cost).
    origin_outputs: dict[str, np.ndarray] | None = None

    def for_model(self, model: Model, data: Data, threads: int = 1) -> "Reference":
        """This reference re-pointed at ``model``'s outputs, keeping the source's metrics."""
        twin = run_batched(reference_runner(model, threads), data.validation.inputs)
        return Reference(twin, self.metrics, self.task, self.primary_output, self.origin_outputs or self.outputs)


def reference_outputs(model: Model, data: Data, threads: int = 1) -> Reference:
    runner = reference_runner(model, threads)
    outputs = run_batched(runner, data.validation.inputs)
    primary = model.iospec.output_names[0]
    metrics = task_metrics(data.task, outputs[primary], data.validation.labels, outputs[primary])
    return Reference(outputs, metrics, data.task, primary)


def validate_file(path: str | Path, reference: Reference, data: Data, tolerance: Tolerance | None,
                  *, runtime: str | None = None, threads: int = 1, raise_on_failure: bool = True,
                  runner=None) -> ValidationResult:
    """Run ``path`` on the validation split; compare each named output with the reference.

    With a ``tolerance`` every element must satisfy |file - ref| <= atol + rtol * |ref|. All
    failures are collected and raised together as one ValidationFailed.
    """
    runner = runner or open_runner(path, runtime, threads=threads)
    outputs = run_batched(runner, data.validation.inputs)
    failures, per_output = [], {}
    for name, ref in reference.outputs.items():
        got = outputs.get(name)
        if got is None:
            failures.append(f"output '{name}' is missing (file has {', '.join(outputs)})")
            continue
        if got.shape != ref.shape:
            failures.append(f"output '{name}' has shape {got.shape}, reference {ref.shape}")
            per_output[name] = {"shape": list(got.shape), "shape_ok": False}
            continue
        diff = np.abs(got.astype(np.float64) - ref.astype(np.float64))
        entry = {"shape": list(got.shape), "shape_ok": True, "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                 **{k: v for k, v in agreement(got, ref).items() if k != "max_abs_diff"}}
        if tolerance is not None:
            bad = diff > tolerance.atol + tolerance.rtol * np.abs(ref)
            entry["within_tolerance"] = not bool(bad.any())
            if bad.any():
                failures.append(f"output '{name}': {int(bad.sum())}/{bad.size} values off by up to "
                                f"{entry['max_abs_diff']:.3g} (atol {tolerance.atol:g}, rtol {tolerance.rtol:g})")
        per_output[name] = entry
    metrics = {}
    if reference.primary_output in outputs and outputs[reference.primary_output].shape == reference.outputs[reference.primary_output].shape:
        origin = reference.origin_outputs or reference.outputs
        metrics = task_metrics(reference.task, outputs[reference.primary_output], data.validation.labels,
                               origin[reference.primary_output])
    drop = metric_drop(reference.task, reference.metrics, metrics) if PRIMARY[reference.task] in metrics else float("nan")
    result = ValidationResult(str(path), runner.runtime, metrics, drop, per_output, tuple(failures))
    if failures and raise_on_failure:
        raise ValidationFailed(Path(path).name, failures)
    return result
