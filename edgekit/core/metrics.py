"""Task metrics and agreement with the reference outputs."""
from __future__ import annotations

import numpy as np

PRIMARY = {"classification": "top1", "regression": "r2", "generic": "cosine"}


def task_metrics(task: str, output: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> dict[str, float]:
    """The task metric (primary key in PRIMARY[task]) plus agreement with ``reference``."""
    out = agreement(output, reference)
    if task == "classification" and output.ndim == 2 and output.shape[1] > 1:  # a class per row
        out["top1_agreement"] = float(np.mean(output.argmax(axis=1) == reference.argmax(axis=1)))
    if task == "classification":
        from sklearn.metrics import accuracy_score
        out["top1"] = float(accuracy_score(labels, output.argmax(axis=-1)))
    elif task == "regression":
        from sklearn.metrics import mean_absolute_error, r2_score
        if labels is None:
            raise ValueError("task 'regression' needs labels to compute MAE and R²")
        pred = output.reshape(len(labels), -1)
        target = labels.reshape(len(labels), -1)
        out["mae"] = float(mean_absolute_error(target, pred))
        out["r2"] = float(r2_score(target, pred))
    return out


def agreement(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Cosine (mean over samples), SNR and max |diff| of ``output`` against ``reference``. An output with one
    value per sample (a score, a click probability) is compared as one vector over the samples: the cosine
    of one number with another is only their sign agreement."""
    a = output.astype(np.float64).reshape(len(output), -1)
    b = reference.astype(np.float64).reshape(len(reference), -1)
    if a.shape[1] == 1:
        a, b = a.reshape(1, -1), b.reshape(1, -1)
    diff = a - b
    noise = float(np.sum(diff ** 2))
    snr = float("inf") if noise == 0 else 10 * np.log10(max(float(np.sum(b ** 2)), 1e-30) / noise)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, 1e-30), 1.0)
    return {"cosine": float(np.mean(cos)), "snr_db": snr, "max_abs_diff": float(np.max(np.abs(diff))) if diff.size else 0.0}


def metric_drop(task: str, reference: dict[str, float], candidate: dict[str, float]) -> float:
    """How much worse the candidate is on the primary metric (positive = worse)."""
    key = PRIMARY[task]
    if task == "generic":
        return 1.0 - candidate["cosine"]
    return reference[key] - candidate[key]


# Per-output tasks: what a file's output is judged by when it has no labels (and beside the labelled one).
OUTPUT_TASKS = ("distribution", "probability", "regression")


def parse_output_task(text: str) -> tuple[str, float | None]:
    """'distribution', 'probability' / 'probability:0.6', 'regression' -> (task, threshold)."""
    task, _, threshold = str(text).partition(":")
    if task not in OUTPUT_TASKS:
        raise ValueError(f"output task {text!r} is not one of {', '.join(OUTPUT_TASKS)} (probability takes "
                         "a threshold: probability:0.6)")
    if threshold and task != "probability":
        raise ValueError(f"output task {text!r}: only probability takes a threshold")
    try:
        value = float(threshold) if threshold else (0.5 if task == "probability" else None)
    except ValueError:
        raise ValueError(f"output task {text!r}: the threshold must be a number in (0, 1)") from None
    if value is not None and not 0 < value < 1:
        raise ValueError(f"output task {text!r}: the threshold must be in (0, 1)")
    return task, value


def infer_output_task(reference: np.ndarray) -> str:
    """'distribution' for softmax-normalised rows (axis 1), 'probability:0.5' for values in [0, 1] (a
    sigmoid), else 'regression'."""
    ref = np.asarray(reference)
    if ref.dtype.kind != "f" or ref.ndim < 2 or ref.size == 0 or not np.all(np.isfinite(ref)):
        return "regression"
    if ref.min() >= 0 and ref.max() <= 1:
        if ref.shape[1] >= 2 and np.allclose(ref.sum(axis=1), 1.0, atol=1e-3):
            return "distribution"
        return "probability:0.5"
    return "regression"


def output_fidelity(task: str, output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Agreement of one output with the reference, and its ``drop`` under ``task``:
    1 - argmax agreement (distribution, over axis 1), 1 - agreement at the threshold (probability),
    1 - cosine (regression; with MAE beside it)."""
    kind, threshold = parse_output_task(task)
    got, ref = np.asarray(output, np.float64), np.asarray(reference, np.float64)
    out = {k: v for k, v in agreement(got, ref).items() if k != "top1_agreement"}
    out["mae"] = float(np.mean(np.abs(got - ref))) if got.size else 0.0
    if kind == "distribution":
        out["top1_agreement"] = float(np.mean(got.argmax(axis=1) == ref.argmax(axis=1)))
        out["drop"] = 1.0 - out["top1_agreement"]
    elif kind == "probability":
        if threshold is None:  # parse_output_task gives probability a threshold (0.5 by default)
            raise ValueError(f"output task {task!r} has no threshold")
        out["threshold"] = threshold
        out["threshold_agreement"] = float(np.mean((got > threshold) == (ref > threshold)))
        out["above_threshold"] = int(np.sum(got > threshold))
        out["above_threshold_reference"] = int(np.sum(ref > threshold))
        out["drop"] = 1.0 - out["threshold_agreement"]
    else:
        out["drop"] = 1.0 - out["cosine"]
    return out
