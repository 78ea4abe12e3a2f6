"""One compression attempt: prune at a ratio -> factorize -> recover -> share, on a copy of the model."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable

from ..core.data import Data
from ..core.model import Model
from ..targets.profiles import DeviceProfile
from ..runtimes.torch_runner import torch_threads
from . import lowrank, recover, sharing, structured, unstructured


@dataclass(frozen=True)
class Plan:
    """What every attempt does; only the ratio changes between attempts."""
    method: str  # structured | unstructured | none
    importance: str  # l1 | l2 | taylor (resolved from "auto")
    protect: frozenset[str]  # never pruned: the output layer(s) and --keep
    keep: frozenset[str]  # never factorized or shared: --keep only (a head may be factorized or shared)


def resolve_importance(wanted: str, data: Data) -> tuple[str, list[str]]:
    """'auto' is taylor when labels or a classification teacher give a loss, else l2."""
    labeled = data.calibration.labels is not None or (data.train is not None and data.train.labels is not None)
    usable = labeled or data.task == "classification"
    if wanted == "auto":
        return ("taylor" if usable else "l2"), []
    if wanted == "taylor" and not usable:
        return "l2", ["prune.importance = taylor needs labels (or a classifier to take pseudo-labels from); "
                      "used l2 magnitude instead"]
    return wanted, []


def run_chain(model: Model, data: Data, prof: DeviceProfile, plan: Plan, ratio: float, origin, *, threads: int,
              progress: Callable[[str], None] | None = None) -> tuple[object, dict]:
    """A compressed copy of ``model.module`` and what was done to it."""
    import torch

    teacher = model.module
    student = copy.deepcopy(teacher).eval()
    names = model.iospec.input_names
    args = tuple(torch.from_numpy(model.example_inputs[n]) for n in names)
    cfg, details = prof.prune, {"ratio": ratio}
    start = time.perf_counter()
    with torch_threads(threads):
        if plan.method == "structured" and ratio > 0:
            details["structured"] = structured.prune_structured(
                student, args, ratio, importance=plan.importance, round_to=cfg.round_to, protect=set(plan.protect),
                loss_batches=lambda: _taylor_losses(student, teacher, data, names))
        elif plan.method == "unstructured" and ratio > 0:
            details["unstructured"] = unstructured.prune_unstructured(student, ratio, protect=set(plan.protect))
        if cfg.lowrank > 0:
            details["lowrank"] = lowrank.factorize(student, cfg.lowrank, round_to=cfg.round_to, protect=set(plan.keep),
                                                  example_args=args)
        _check_outputs(student, args, model)
    if data.train is not None and prof.recover.epochs > 0:
        details["recovery"] = recover.distill(student, teacher, data.train, names, data.task, prof.recover,
                                              threads=threads, progress=progress,
                                              label=f"recover (ratio {ratio:.2f})")
    else:
        details["recovery"] = recover.recalibrate_bn(student, data.calibration, names, prof.recover.batch_size)
        if data.train is None:
            details["recovery"]["why"] = "the data has no training split (x_train), so no distillation"
    unstructured.make_permanent(student)
    if plan.method == "unstructured":
        details["unstructured"]["sparsity_after_recovery"] = unstructured.sparsity(student, set(plan.protect))
        details["unstructured"]["per_layer"] = unstructured.layer_sparsity(student)
    if cfg.share_bits > 0:
        details["sharing_bits"] = cfg.share_bits
        details["metrics_before_sharing"] = evaluate(student, model, data, origin, threads)
        details["sharing"] = sharing.share_weights(student, cfg.share_bits, protect=set(plan.keep))
    details["seconds"] = round(time.perf_counter() - start, 2)
    return student.eval(), details


def _taylor_losses(student, teacher, data: Data, names: list[str], samples: int = 256):
    """Losses whose gradients score channels: labels when there are any, else the teacher's classes."""
    import torch
    import torch.nn.functional as F

    labeled = [s for s in (data.train, data.calibration) if s is not None and s.labels is not None]
    split = labeled[0] if labeled else (data.train if data.train is not None else data.calibration)
    used = 0
    for args, labels in recover.batches(split, names, 64, shuffle=True, seed=1):
        out = recover.primary(student(*args))
        if labels is None:
            with torch.no_grad():
                labels = recover.primary(teacher(*args)).argmax(dim=1)
        if data.task == "regression":
            yield F.mse_loss(out.reshape(len(labels), -1), labels.reshape(len(labels), -1).to(out.dtype))
        else:
            yield F.cross_entropy(out, labels.long())
        used += len(args[0])
        if used >= samples:
            break


def evaluate(module, model: Model, data: Data, origin, threads: int) -> dict[str, float]:
    """Task metrics of a torch module on the validation split; ``origin``: the source's primary output there."""
    from ..core.metrics import task_metrics
    from ..runtimes.base import run_batched
    from ..runtimes.torch_runner import TorchRunner

    outputs = run_batched(TorchRunner(module, model.iospec, threads), data.validation.inputs)
    return task_metrics(data.task, outputs[model.iospec.output_names[0]], data.validation.labels, origin)


def _check_outputs(student, args: tuple, model: Model) -> None:
    """Every output keeps its shape (a head that is not the last layer to run is not auto-protected)."""
    import torch

    from ..core.errors import UsageError
    from ..runtimes.torch_runner import flatten_outputs

    with torch.no_grad():
        got = [tuple(t.shape) for t in flatten_outputs(student(*args))]
        want = [tuple(t.shape) for t in flatten_outputs(model.module(*args))]
    for name, g, w in zip(model.iospec.output_names, got, want):
        if g != w:
            raise UsageError(f"pruning changed output '{name}' from {w} to {g}: pass --keep with the layer that "
                             "produces it (only the last layer to run is protected automatically)")
