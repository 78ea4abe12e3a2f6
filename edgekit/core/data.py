"""The one data adapter: .npz/.npy files or in-memory arrays -> checked calibration/validation splits."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .iospec import IOSpec

TASKS = ("classification", "regression", "generic")


@dataclass(frozen=True)
class Split:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    index: np.ndarray | None = None  # the samples' positions in the data file, where they come from one

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))


@dataclass(frozen=True)
class Data:
    calibration: Split
    validation: Split
    train: Split | None
    task: str
    source: str
    task_detected: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    train_kind: str = "given"  # "transfer": set aside from the samples (no training split was given)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "task": self.task, "task_detected": self.task_detected,
                "calibration": len(self.calibration), "validation": len(self.validation),
                "train": len(self.train) if self.train else 0,
                "train_kind": self.train_kind if self.train else None,
                "labels": self.validation.labels is not None, "notes": list(self.notes)}


def read_arrays(source: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz (or a single .npy as ``x``), without executing pickles."""
    path = Path(source)
    if not path.is_file():
        raise UsageError(f"data file {source} not found; check the path")
    try:
        if path.suffix == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception:
        raise UsageError(f"data file {source} is not a readable .npz/.npy of plain arrays (corrupt, or it "
                         "holds pickled objects, which edgekit does not load); save it with numpy.savez") from None


def prepare(arrays: dict[str, np.ndarray], iospec: IOSpec, *, source: str, task: str | None = None,
            calib_samples: int | None = None, val_samples: int | None = None, seed: int = 0,
            transfer: float = 0.0) -> Data:
    """Check the arrays against the IOSpec and split them into calibration and validation.

    Arrays are named after the model inputs (or ``x`` for a single input), with optional labels
    ``y``. ``<input>_train``/``x_train`` and ``y_train`` form an optional training split. Without
    one, ``transfer`` > 0 sets that share of the samples after calibration aside as a transfer split
    (for distillation, whose targets are the source model's outputs): validation never sees it.
    """
    keys = _match_inputs(arrays, iospec, source, suffix="")
    labels = arrays.get("y")
    n = _check_batch(keys, arrays, labels, source)
    inputs = {name: _check_array(arrays[key], iospec.input(name), source, key) for name, key in keys.items()}
    if labels is not None:
        labels = _check_finite(np.asarray(labels), source, "y")

    detected = detect_task(labels, iospec)
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task!r} is not one of {', '.join(TASKS)}")
    chosen = task or detected
    if chosen in ("classification", "regression") and labels is None:
        raise UsageError(f"data file {source}: task '{chosen}' needs labels in an array named 'y'")
    notes = []
    used = set(keys.values()) | {"y", "y_train"} | {k + "_train" for k in keys.values()} | {"x_train"}
    ignored = sorted(set(arrays) - used)
    if ignored:
        notes.append(f"arrays not used by the model and ignored: {', '.join(ignored)}")
    if chosen == "classification" and labels is not None:  # refused above when None
        labels = labels.astype(np.int64)

    order = np.random.default_rng(seed).permutation(n)
    n_cal = calib_samples if calib_samples is not None else min(256, max(1, n // 4))
    if n_cal >= n:
        raise UsageError(f"data file {source}: {n} samples cannot give {n_cal} for calibration and leave any for "
                         "validation; lower --calib-samples or add data")
    has_train = bool(_match_inputs(arrays, iospec, source, suffix="_train", required=False))
    n_transfer = int((n - n_cal) * transfer) if transfer > 0 and not has_train and n - n_cal >= 20 else 0
    if val_samples is not None:
        n_transfer = max(0, min(n_transfer, n - n_cal - val_samples))
    n_val = val_samples if val_samples is not None else n - n_cal - n_transfer
    if n_cal < 1 or n_val < 1:
        raise UsageError(f"data file {source}: calibration and validation need at least 1 sample each "
                         f"(got {n_cal} and {n_val})")
    if n_cal + n_transfer + n_val > n:
        raise UsageError(f"data file {source}: {n} samples cannot give {n_cal} for calibration"
                         + (f", {n_transfer} for transfer" if n_transfer else "")
                         + f" and {n_val} for validation; lower --calib-samples/--val-samples or add data")
    if n_cal < 32:
        notes.append(f"only {n_cal} calibration samples; 100+ give steadier quantization ranges")
    if n_val < 100:
        notes.append(f"only {n_val} validation samples: one sample moves the metric by {100 / n_val:.1f} points")

    def take(idx) -> Split:
        return Split({k: v[idx] for k, v in inputs.items()}, None if labels is None else labels[idx], idx)

    train = None
    if n_transfer:
        train = take(order[n_cal + n_val:n_cal + n_val + n_transfer])
        notes.append(f"no training split: {n_transfer} of the {n} samples are set aside as a transfer split for "
                     f"distillation (targets: the source model's outputs"
                     f"{'' if labels is None else ', and the labels'}); validation uses {n_val} others, "
                     f"calibration {n_cal}")
    train_keys = _match_inputs(arrays, iospec, source, suffix="_train", required=False)
    if train_keys:
        train_labels = arrays.get("y_train")
        _check_batch(train_keys, arrays, train_labels, source)
        train = Split({name: _check_array(arrays[key], iospec.input(name), source, key) for name, key in train_keys.items()},
                      None if train_labels is None else _check_finite(np.asarray(train_labels), source, "y_train"))
    return Data(take(order[:n_cal]), take(order[n_cal:n_cal + n_val]), train, chosen, source, detected, tuple(notes),
                "transfer" if n_transfer and not train_keys else "given")


def detect_task(labels: np.ndarray | None, iospec: IOSpec) -> str:
    if labels is None:
        return "generic"
    out = iospec.outputs[0]
    classes = out.shape[-1] if len(out.shape) == 2 and isinstance(out.shape[-1], int) else None
    integral = labels.dtype.kind in "iub" or (labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0))
    if labels.ndim == 1 and integral and classes and classes > 1 and labels.min() >= 0 and labels.max() < classes:
        return "classification"
    return "regression"


def _match_inputs(arrays, iospec: IOSpec, source: str, suffix: str, required: bool = True):
    """Model input name -> the array name in the file that feeds it."""
    names = iospec.input_names
    if all(n + suffix in arrays for n in names):
        return {n: n + suffix for n in names}
    if len(names) == 1 and "x" + suffix in arrays:
        return {names[0]: "x" + suffix}
    if not required:
        return None
    missing = [n for n in names if n + suffix not in arrays]
    raise UsageError(f"data file {source}: no array for model input(s) {', '.join(missing)}; "
                     f"it has {', '.join(sorted(arrays)) or 'no arrays'} (name arrays after the inputs, or 'x' for one input)")


def _check_batch(keys: dict[str, str], arrays, labels, source: str) -> int:
    sizes = {key: len(arrays[key]) if np.ndim(arrays[key]) else 0 for key in keys.values()}
    if labels is not None:
        sizes["y"] = len(labels) if np.ndim(labels) else 0
    if len(set(sizes.values())) != 1:
        raise UsageError(f"data file {source}: arrays disagree on the number of samples: "
                         + ", ".join(f"{k}={v}" for k, v in sizes.items()))
    n = next(iter(sizes.values()))
    if n == 0:
        raise UsageError(f"data file {source}: the arrays hold no samples")
    return n


def _check_array(arr, spec, source: str, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if not spec.matches_sample(tuple(arr.shape[1:])):
        want = tuple(d if isinstance(d, int) else "*" for d in spec.shape[1:])
        raise UsageError(f"data file {source}: array '{name}' has samples of shape {tuple(arr.shape[1:])} but "
                         f"model input '{spec.name}' expects {want}; reshape the data")
    want_kind = np.dtype(spec.dtype).kind
    if want_kind == "f" and arr.dtype.kind not in "fiu":
        raise UsageError(f"data file {source}: array '{name}' is {arr.dtype}, model input '{spec.name}' wants {spec.dtype}")
    if want_kind in "iu" and arr.dtype.kind not in "iu":
        raise UsageError(f"data file {source}: array '{name}' is {arr.dtype} but model input '{spec.name}' "
                         f"takes integers ({spec.dtype}); save it as an integer array")
    return _check_finite(arr, source, name).astype(spec.dtype, copy=False)


def _check_finite(arr: np.ndarray, source: str, name: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise UsageError(f"data file {source}: array '{name}' has {bad} NaN/Inf values; clean the data")
    return arr
