"""Task metrics and agreement with the reference outputs."""
from __future__ import annotations

import numpy as np

PRIMARY = {"classification": "top1", "regression": "r2", "generic": "cosine"}


def task_metrics(task: str, output: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> dict[str, float]:
    """The task metric (primary key in PRIMARY[task]) plus agreement with ``reference``."""
    out = agreement(output, reference)
    if task == "classification":
        from sklearn.metrics import accuracy_score
        out["top1"] = float(accuracy_score(labels, output.argmax(axis=-1)))
    elif task == "regression":
        from sklearn.metrics import mean_absolute_error, r2_score
        pred = output.reshape(len(labels), -1)
        target = labels.reshape(len(labels), -1)
        out["mae"] = float(mean_absolute_error(target, pred))
        out["r2"] = float(r2_score(target, pred))
    return out


def agreement(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    a = output.astype(np.float64).reshape(len(output), -1)
    b = reference.astype(np.float64).reshape(len(reference), -1)
    diff = a - b
    noise = float(np.sum(diff ** 2))
    snr = float("inf") if noise == 0 else 10 * np.log10(max(float(np.sum(b ** 2)), 1e-30) / noise)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, np.sum(a * b, axis=1) / np.maximum(norms, 1e-30), 1.0)
    result = {"cosine": float(np.mean(cos)), "snr_db": snr, "max_abs_diff": float(np.max(np.abs(diff))) if diff.size else 0.0}
    if a.shape[1] > 1:
        result["top1_agreement"] = float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))
    return result


def metric_drop(task: str, reference: dict[str, float], candidate: dict[str, float]) -> float:
    """How much worse the candidate is on the primary metric (positive = worse)."""
    key = PRIMARY[task]
    if task == "generic":
        return 1.0 - candidate["cosine"]
    return reference[key] - candidate[key]
