"""Validation: run an exported file in its own runtime on the validation split and compare it
with the source model, per named output (shape, then tolerance), collecting every failure."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.data import Data
from ..core.errors import UsageError, ValidationFailed
from ..targets.formats import Tolerance
from ..core.metrics import agreement, infer_output_task, metric_drop, output_fidelity, task_metrics
from ..core.model import Model
from ..core.results import ValidationResult
from ..runtimes import open_runner, reference_runner
from ..runtimes.base import run_batched


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
    # Output name -> what it is judged by (metrics.OUTPUT_TASKS, 'probability:T'); the labelled primary
    # output is judged by the data's task instead.
    output_tasks: dict[str, str] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        return self.task in ("classification", "regression")

    def for_model(self, model: Model, data: Data, threads: int = 1) -> "Reference":
        """This reference re-pointed at ``model``'s outputs, keeping the source's metrics."""
        twin = run_batched(reference_runner(model, threads), data.validation.inputs)
        return Reference(twin, self.metrics, self.task, self.primary_output, self.origin_outputs or self.outputs,
                         self.output_tasks)


def reference_outputs(model: Model, data: Data, threads: int = 1, output_tasks: dict[str, str] | None = None) -> Reference:
    runner = reference_runner(model, threads)
    outputs = run_batched(runner, data.validation.inputs)
    primary = model.iospec.output_names[0]
    metrics = task_metrics(data.task, outputs[primary], data.validation.labels, outputs[primary])
    given = dict(output_tasks or {})
    unknown = sorted(set(given) - set(outputs))
    if unknown:
        raise UsageError(f"output task for {', '.join(unknown)}: the model has no such output "
                         f"(its outputs: {', '.join(outputs)})")
    tasks = {name: given.get(name) or infer_output_task(out) for name, out in outputs.items()}
    return Reference(outputs, metrics, data.task, primary, output_tasks=tasks)


def judge(outputs: dict[str, np.ndarray], reference: Reference, labels) -> tuple[dict, float, dict, str]:
    """(primary metrics, drop, per-output fidelity, the output whose drop decided).

    Every output the reference has is judged: the labelled primary output by the task metric, each
    other output by its output task against the source. The worst drop decides."""
    origin = reference.origin_outputs or reference.outputs
    primary = reference.primary_output
    metrics, fidelity, drops = {}, {}, {}
    for name, ref in origin.items():
        got = outputs.get(name)
        if got is None or got.shape != ref.shape:
            continue
        task = reference.output_tasks.get(name) or infer_output_task(ref)
        fidelity[name] = {"task": task, **output_fidelity(task, got, ref)}
        drops[name] = fidelity[name]["drop"]
    if primary in fidelity:
        metrics = task_metrics(reference.task, outputs[primary], labels, origin[primary])
        if reference.labelled:
            drops[primary] = metric_drop(reference.task, reference.metrics, metrics)
            fidelity[primary]["drop"] = drops[primary]
            fidelity[primary]["task"] = f"{reference.task} (labels)"
    if len(drops) < len(origin):
        return metrics, float("nan"), fidelity, ""
    worst = max(drops, key=lambda n: drops[n])
    return metrics, float(drops[worst]), fidelity, worst


def validate_file(path: str | Path, reference: Reference, data: Data, tolerance: Tolerance | None,
                  *, runtime: str | None = None, threads: int = 1, raise_on_failure: bool = True,
                  runner=None) -> ValidationResult:
    """Run ``path`` on the validation split; compare each named output with the reference.

    With a ``tolerance`` every element must satisfy |file - ref| <= atol + rtol * |ref|. All
    failures are collected and raised together as one ValidationFailed.
    """
    runner = runner or open_runner(path, runtime, threads=threads)
    outputs = run_batched(runner, data.validation.inputs)
    return judge_outputs(outputs, path, runner.runtime, reference, data, tolerance, raise_on_failure=raise_on_failure,
                         measured_on=getattr(runner, "where", "host"))


def judge_outputs(outputs: dict[str, np.ndarray], path: str | Path, runtime: str, reference: Reference, data: Data,
                  tolerance: Tolerance | None, *, raise_on_failure: bool = True,
                  measured_on: str = "host") -> ValidationResult:
    """``outputs`` of ``path`` on the validation split, judged as ``validate_file`` does."""
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
        entry = {"shape": list(got.shape), "shape_ok": True, "max_abs_diff": float(diff.max()) if diff.size else 0.0}
        if tolerance is not None:
            bad = diff > tolerance.atol + tolerance.rtol * np.abs(ref)
            entry["within_tolerance"] = not bool(bad.any())
            if bad.any():
                failures.append(f"output '{name}': {int(bad.sum())}/{bad.size} values off by up to "
                                f"{entry['max_abs_diff']:.3g} (atol {tolerance.atol:g}, rtol {tolerance.rtol:g})")
        per_output[name] = entry
    metrics, drop, fidelity, decided = judge(outputs, reference, data.validation.labels)
    for name, figures in fidelity.items():  # against the source (max_abs_diff above: against the twin)
        per_output[name] = {**per_output.get(name, {}),
                            **{k: v for k, v in figures.items() if k != "max_abs_diff"},
                            "max_abs_diff_source": figures["max_abs_diff"]}
    result = ValidationResult(str(path), runtime, metrics, drop, per_output, tuple(failures), decided, measured_on)
    if failures and raise_on_failure:
        raise ValidationFailed(Path(path).name, failures)
    return result


def other_size_check(path: str | Path, model: Model, data: Data, *, runtime: str, threads: int = 1,
                     runner=None, samples: int = 16) -> dict | None:
    """Run ``path`` and the source at a second size of every dynamic non-batch input axis (3/4 of the
    data's), and compare; None when the model has no such axis."""
    axes = {t.name: [a for a in t.dynamic_axes if a > 0] for t in model.iospec.inputs}
    if not any(axes.values()):
        return None
    inputs = {}
    for name, array in data.validation.inputs.items():
        index = [slice(0, samples)] + [slice(None)] * (array.ndim - 1)
        for a in axes.get(name, []):
            index[a] = slice(0, max(1, (array.shape[a] * 3) // 4))
        inputs[name] = np.ascontiguousarray(array[tuple(index)])
    shapes = {n: list(a.shape) for n, a in inputs.items()}
    try:
        want = run_batched(reference_runner(model, threads), inputs)
    except Exception as exc:  # the source itself does not take this size: nothing to hold the file to
        return {"shapes": shapes, "checked": False, "why": f"the source fails at this size ({type(exc).__name__})"}
    runner = runner or open_runner(path, runtime, threads=threads)
    try:
        got = run_batched(runner, inputs)
    except Exception as exc:
        return {"shapes": shapes, "checked": True, "runs": False, "error": str(exc).splitlines()[0][:200]}
    cos = {n: agreement(got[n], want[n])["cosine"] for n in want if n in got and got[n].shape == want[n].shape}
    return {"shapes": shapes, "checked": True, "runs": len(cos) == len(want), "cosine": cos}
