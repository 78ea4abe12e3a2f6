"""Recovery after pruning: distillation from the original model, or BatchNorm recalibration.

With a training split, the pruned student is fine-tuned against the original (the teacher):
``alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * task loss`` for classification, MSE to
the teacher's outputs otherwise. Unlabeled inputs are enough (the teacher term alone). Without
any training data the BatchNorm running statistics are re-estimated on the calibration split.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ..core.data import Split


def batches(split: Split, names: list[str], size: int, *, shuffle: bool, seed: int = 0):
    """(tensor args, label tensor or None) per batch of ``split``."""
    import torch

    n = len(split)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, size):
        idx = order[start:start + size]
        args = tuple(torch.from_numpy(np.ascontiguousarray(split.inputs[k][idx])) for k in names)
        labels = None if split.labels is None else torch.from_numpy(np.asarray(split.labels[idx]))
        yield args, labels


def primary(result):
    from ..runtimes.torch_runner import flatten_outputs

    return flatten_outputs(result)[0]


def distill_loss(student_out, teacher_out, labels, task: str, temperature: float, alpha: float):
    import torch.nn.functional as F

    if task == "classification" and student_out.dim() == 2:
        t = temperature
        soft = F.kl_div(F.log_softmax(student_out / t, dim=1), F.softmax(teacher_out / t, dim=1),
                        reduction="batchmean") * t * t
        if labels is None or alpha >= 1.0:
            return soft
        return alpha * soft + (1 - alpha) * F.cross_entropy(student_out, labels.long())
    soft = F.mse_loss(student_out, teacher_out)
    if labels is None or alpha >= 1.0 or task != "regression":
        return soft
    return alpha * soft + (1 - alpha) * F.mse_loss(student_out.reshape(labels.shape[0], -1),
                                                   labels.reshape(labels.shape[0], -1).to(student_out.dtype))


def distill(student, teacher, train: Split, names: list[str], task: str, cfg, *, threads: int = 1,
            progress: Callable[[str], None] | None = None, label: str = "recover", time_s: float | None = None,
            score: Callable[[], float] | None = None) -> dict:
    """Fine-tune ``student`` in place for ``cfg.epochs`` epochs (stopping at ``time_s`` seconds, when given);
    returns the per-epoch losses. With ``score`` (higher is better, measured on samples the training and the
    validation do not use), the state after the best-scoring epoch is kept, the later one on ties."""
    import copy

    import torch
    import torch.nn.functional as F

    from ..runtimes.torch_runner import flatten_outputs, torch_threads

    teacher.eval()
    opt = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=1e-4)
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    losses, start = [], time.perf_counter()
    per_epoch = -(-len(train) // cfg.batch_size)
    stopped, scores, kept = False, [], None
    with torch_threads(threads, seed=0):  # a forked, seeded RNG: dropout draws leave the caller's alone
        try:
            for epoch in range(cfg.epochs):
                student.train()
                total, count = 0.0, 0
                for i, (args, labels) in enumerate(batches(train, names, cfg.batch_size, shuffle=True, seed=epoch)):
                    if len(args[0]) < 2:  # BatchNorm cannot train on one sample
                        continue
                    if time_s is not None and time.perf_counter() - start > time_s:
                        stopped = True
                        break
                    with torch.no_grad():
                        targets = flatten_outputs(teacher(*args))
                    outs = flatten_outputs(student(*args))
                    loss = distill_loss(outs[0], targets[0], labels, task, cfg.distill_temperature, cfg.distill_alpha)
                    for out, target in zip(outs[1:], targets[1:]):  # every other head: MSE scaled to its spread
                        loss = loss + F.mse_loss(out, target) / (target.var() + 1e-6)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    total += float(loss.detach()) * len(args[0])
                    count += len(args[0])
                    if progress is not None and (i % 5 == 0 or i == per_epoch - 1):
                        progress(f"{label}: epoch {epoch + 1}/{cfg.epochs} {bar(i + 1, per_epoch)} loss {total / count:.4f}")
                if count:
                    losses.append(round(total / count, 6))
                    if score is not None:
                        student.eval()
                        with torch.no_grad():
                            scores.append(round(float(score()), 6))
                        if scores[-1] >= max(scores):
                            kept = (len(scores), copy.deepcopy(student.state_dict()))
                if stopped:
                    break
            if kept is not None and kept[0] != len(scores):
                student.load_state_dict(kept[1])
        finally:
            student.eval()
    chosen = {"scores": scores, "kept_epoch": kept[0]} if kept is not None else {}
    return {**chosen, "method": "distillation", "epochs": cfg.epochs, "epochs_run": len(losses), "samples": len(train),
            "losses": losses, **({"stopped": f"at its {time_s:g} s time box"} if stopped else {}),
            "outputs_distilled": "all",
            "labels_used": train.labels is not None and cfg.distill_alpha < 1.0,
            "temperature": cfg.distill_temperature, "alpha": cfg.distill_alpha,
            "seconds": round(time.perf_counter() - start, 2)}


def recalibrate_bn(module, split: Split, names: list[str], batch_size: int = 64) -> dict:
    """Re-estimate every BatchNorm's running mean/var on ``split`` (cumulative average), in place."""
    import torch
    from torch import nn

    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return {"method": "none", "why": "the model has no BatchNorm layers and there is no training split"}
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    module.train()
    try:
        with torch.no_grad():
            for args, _ in batches(split, names, batch_size, shuffle=False):
                if len(args[0]) > 1:
                    module(*args)
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum
        module.eval()
    return {"method": "batchnorm recalibration", "layers": len(norms), "samples": len(split)}


def bar(done: int, total: int, width: int = 20) -> str:
    filled = int(width * done / max(total, 1))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {done}/{total}"
