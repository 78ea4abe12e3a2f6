"""The search's data adapter and its training recipe.

Data: arrays named as ``edgekit build`` takes them (``x``/``y`` or named after the input, with
``x_train``/``y_train``). The held-out ``x``/``y`` are what the pipeline calibrates and validates on; the
training split trains the candidates. Without one, 70% of the samples (seeded, stratified by label
order) train and the rest are held out. Image inputs (4-D float, N C H W) are resized to the trial's
resolution, bilinear with antialiasing.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.errors import UsageError


class TrainingFailed(RuntimeError):
    """A candidate's training diverged (a NaN or infinite loss): the trial fails, the search goes on."""


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float = 5e-3
    batch_size: int = 32
    weight_decay: float = 1e-4
    shift: float = 0.0625  # random translation of image inputs by up to this share of their height (0: none):
    # 2 px at 32 px, 1 px at 16 px (a fixed 2 px cost four 16 px candidates 1-11 points of 3-epoch top-1)

    def to_dict(self) -> dict:
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "weight_decay": self.weight_decay, "shift": self.shift}


def search_arrays(arrays: dict[str, np.ndarray], source: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The arrays with a training split: given, or 70% of the samples set aside (the rest stay held out)."""
    key = "x" if "x" in arrays else next((k for k in arrays if k not in ("y", "y_train") and not k.endswith("_train")),
                                        None)
    if key is None or "y" not in arrays:
        raise UsageError(f"data {source}: edgekit nas trains every candidate, so it needs inputs ('x' or named "
                         "after the input) and labels 'y' (plus optional x_train/y_train)")
    if f"{key}_train" in arrays and "y_train" in arrays:
        return dict(arrays)
    n = len(arrays["y"])
    if n < 20:
        raise UsageError(f"data {source}: {n} labelled samples are too few to train and validate candidates")
    order = np.random.default_rng(seed).permutation(n)
    cut = int(n * 0.7)
    out = {}
    for name, value in arrays.items():
        out[name + "_train"] = value[order[:cut]]
        out[name] = value[order[cut:]]
    return out


def image_info(arrays: dict[str, np.ndarray]) -> tuple[int | None, int | None, int | None]:
    """(channels, height, classes) when the data is one image input with integer labels, else Nones."""
    inputs = [k for k in arrays if k not in ("y", "y_train") and not k.endswith("_train")]
    labels = arrays.get("y")
    if len(inputs) != 1 or labels is None or np.asarray(labels).dtype.kind not in "iu":
        return None, None, None
    x = arrays[inputs[0]]
    if x.ndim != 4 or x.dtype.kind != "f":
        return None, None, None
    classes = int(max(np.max(labels), np.max(arrays.get("y_train", labels)))) + 1
    return int(x.shape[1]), int(x.shape[2]), classes


def resized(arrays: dict[str, np.ndarray], resolution: int | None) -> dict[str, np.ndarray]:
    """Image inputs (4-D float) resized so H is ``resolution`` (W in proportion); others as they are."""
    if resolution is None:
        return dict(arrays)
    import torch
    import torch.nn.functional as F

    out = {}
    for name, value in arrays.items():
        if value.ndim == 4 and value.dtype.kind == "f" and value.shape[2] != resolution:
            width = max(1, round(value.shape[3] * resolution / value.shape[2]))
            t = F.interpolate(torch.from_numpy(np.ascontiguousarray(value)), size=(resolution, width),
                              mode="bilinear", align_corners=False, antialias=resolution < value.shape[2])
            value = t.numpy().astype(value.dtype)
        out[name] = value
    return out


def split_of(arrays: dict[str, np.ndarray], names: list[str], suffix: str) -> tuple[list[np.ndarray], np.ndarray]:
    key = (lambda n: n + suffix if n + suffix in arrays else "x" + suffix)
    return [arrays[key(n)] for n in names], arrays["y" + suffix]


def fit(module, arrays: dict[str, np.ndarray], names: list[str], task: str, recipe: Recipe, *, seed: int,
        threads: int, guard=None, after_epoch: Callable[[int, float], bool] | None = None) -> dict:
    """Train ``module`` in place on the training split: AdamW with a one-cycle schedule, cross-entropy
    (classification) or MSE (regression). ``guard()`` is entered around each epoch (the host lock);
    ``after_epoch(epoch, held-out metric)`` returning False stops training early. Returns the losses."""
    import torch
    import torch.nn.functional as F

    from ..runtimes.torch_runner import torch_threads

    inputs, labels = split_of(arrays, names, "_train")
    x = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    y = torch.from_numpy(np.asarray(labels).astype(np.int64 if task == "classification" else np.float32))
    steps = max(1, math.ceil(len(y) / recipe.batch_size))
    images = [t for t in x if t.ndim == 4 and t.is_floating_point()]
    pixels = round(recipe.shift * images[0].shape[2]) if images and recipe.shift else 0
    losses, start = [], time.perf_counter()
    with torch_threads(threads, seed=seed):
        opt = torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps)
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(recipe.epochs):
            with guard() if guard else contextlib.nullcontext():
                module.train()
                total = 0.0
                for idx in torch.randperm(len(y), generator=gen).split(recipe.batch_size):
                    if len(idx) < 2:
                        continue
                    batch = [t[idx] for t in x]
                    if pixels:
                        shift = torch.randint(-pixels, pixels + 1, (2,), generator=gen).tolist()
                        batch = [torch.roll(t, shifts=shift, dims=(2, 3)) if t.ndim == 4 and t.is_floating_point()
                                 else t for t in batch]
                    out = module(*batch)
                    out = out[0] if isinstance(out, (tuple, list)) else out
                    loss = (F.cross_entropy(out, y[idx]) if task == "classification"
                            else F.mse_loss(out.reshape(len(idx), -1), y[idx].reshape(len(idx), -1)))
                    if not torch.isfinite(loss):
                        raise TrainingFailed(f"the loss is {float(loss)} in epoch {epoch + 1}")
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(idx)
                module.eval()
                losses.append(round(total / len(y), 5))
                score = held_out_metric(module, arrays, names, task) if after_epoch else None
            if after_epoch and after_epoch(epoch, score) is False:
                break
    return {"losses": losses, "epochs_run": len(losses), "seconds": round(time.perf_counter() - start, 2)}


def held_out_metric(module, arrays, names, task) -> float:
    """The torch model's top-1 (or R²) on the held-out split: what the early-stop rule compares."""
    import torch

    inputs, labels = split_of(arrays, names, "")
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
        out = (out[0] if isinstance(out, (tuple, list)) else out).numpy()
    if task == "classification":
        return float(np.mean(out.argmax(axis=-1) == labels))
    target = np.asarray(labels, dtype=np.float64).reshape(len(labels), -1)
    pred = out.reshape(len(labels), -1)
    return float(1.0 - ((pred - target) ** 2).sum() / max(((target - target.mean(0)) ** 2).sum(), 1e-12))
