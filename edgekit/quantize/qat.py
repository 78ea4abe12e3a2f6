"""Quantization-aware training as a rung of the repair ladder: PTQ, then QAT at the asked bits, then (only
when QAT also misses) moving the most sensitive layers up in precision.

``train`` fine-tunes a copy of the model on the target quantizer's weight grid (quantize/qat_grid.py) by
distillation from the source model (plus the task loss when the training split has labels); each format
pass then exports the trained copy and quantizes it with the same quantizer as its PTQ file.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from ..core.attempt import Attempt
from ..export.job import PassContext
from ..core.model import Model


@dataclass(frozen=True)
class QatRun:
    """A trained copy of the model (None when QAT did not run) and what happened."""
    model: Model | None
    details: dict = field(default_factory=dict)

    @property
    def skipped(self) -> str | None:
        return self.details.get("skipped")


def wanted(ctx: PassContext, missed: bool) -> bool:
    """Whether the profile asks for QAT here: always, or on a missed budget."""
    mode = ctx.profile.qat.mode
    return mode == "always" or (mode == "on-miss" and missed)


def refusal(model: Model | None) -> str | None:
    """Why a source cannot be trained with QAT (one line), or None."""
    if model is None or model.kind != "torch" or model.module is None:
        kind = "no model" if model is None else f"a {model.kind} source"
        return (f"QAT skipped: it needs a torch graph to train and this is {kind}; give the torch model "
                "(FILE.py:FUNC --weights, or a torch.export .pt2) to use it")
    return None


def train(ctx: PassContext, target: str, bits: int, progress=None) -> QatRun:
    """A copy of ``ctx.model`` fine-tuned on ``target``'s ``bits``-bit weight grid, time-boxed by the profile.
    A training that fails (an op torch cannot differentiate, say) is a skipped QAT, not a failed file: the
    PTQ file the ladder already validated stays."""
    try:
        return _train(ctx, target, bits, progress)
    except Exception as exc:  # noqa: BLE001 - see above
        ctx.log.write(f"qat {target} int{bits} training failed: {exc!r}\n")
        return QatRun(None, {"skipped": f"QAT skipped: its training failed ({type(exc).__name__}: "
                                        f"{str(exc)[:160]}); the PTQ file ships", "error": repr(exc)[:300]})


def _train(ctx: PassContext, target: str, bits: int, progress=None) -> QatRun:
    from ..prune.recover import batches, distill
    from .qat_grid import fake_quant_inputs, finish, grid, observe_inputs, prepare

    why = refusal(ctx.model)
    if why:
        return QatRun(None, {"skipped": why})
    split = ctx.data.train
    if split is None or len(split) < 2:
        return QatRun(None, {"skipped": "QAT skipped: no samples to train on (give a train split, or input "
                                        "samples for label-free distillation)"})
    g = grid(target, bits)
    try:
        student, layers = prepare(ctx.model.module, g)
    except ValueError as exc:
        return QatRun(None, {"skipped": f"QAT skipped: {exc}"})
    names = ctx.model.iospec.input_names
    observed = 0
    full_integer = target == "onnx" or bits == 8  # ORT's files and the converter's int8 file: 8-bit activations
    if full_integer and ctx.data.calibration is not None:
        ranges = observe_inputs(student, layers, (args for args, _ in batches(ctx.data.calibration, names, 64,
                                                                               shuffle=False)))
        observed = fake_quant_inputs(student, ranges)
    q, rec = ctx.profile.qat, ctx.profile.recover
    cfg = SimpleNamespace(epochs=q.epochs, lr=q.lr, batch_size=q.batch_size,
                          distill_temperature=rec.distill_temperature, distill_alpha=rec.distill_alpha)
    started = time.perf_counter()
    teacher = ctx.teacher if ctx.teacher is not None else ctx.model.module
    held = ctx.data.calibration if ctx.data.calibration is not None and len(ctx.data.calibration) >= 2 else None
    score, scored_by = (None, None) if held is None else held_out_score(student, teacher, held, names, ctx.data.task)
    fit = distill(student, teacher, split, names, ctx.data.task, cfg, threads=ctx.profile.target.resolved_threads,
                  label=f"qat {target} int{bits}", time_s=q.time_s, progress=progress, score=score)
    student = finish(student)
    meta = {k: v for k, v in ctx.model.meta.items() if k != "onnx_export"}  # a new graph: export it anew
    model = replace(ctx.model, module=student, onnx_path=None, meta=meta)
    details: dict[str, Any] = {
        "grid": g.target, "bits": bits, "layers": len(layers),
        "activations": (f"{observed} layer inputs fake-quantized to 8 bits with ranges from the calibration split "
                        "(min-max, as the quantizer calibrates)") if observed else "float (weight-only file)", "epochs": q.epochs, "epochs_run": fit["epochs_run"],
        "lr": q.lr, "time_box_s": q.time_s, "samples": fit["samples"],
        "samples_kind": ctx.data.train_kind, "labels_used": fit["labels_used"], "losses": fit["losses"],
        "seconds": round(time.perf_counter() - started, 2),
        "teacher": "the source model before pruning" if ctx.teacher is not ctx.model.module else "the source model",
    }
    if "stopped" in fit:
        details["stopped"] = fit["stopped"]
    if "kept_epoch" in fit:
        details.update(kept_epoch=fit["kept_epoch"], epoch_scores=fit["scores"], scored_by=scored_by)
    ctx.log.write(f"qat {target} int{bits}: {details}\n")
    return QatRun(model, details)


def held_out_score(student, teacher, split, names: list[str], task: str):
    """(a function scoring the fake-quantized ``student`` on ``split``, higher is better; what it measures).

    The split is the calibration one: the training never sees it and the validation that gates the file is
    kept apart. Classification: top-1 against the labels (against the teacher's top-1 without labels);
    otherwise the negative mean squared error to the teacher over every output."""
    import torch

    from ..prune.recover import batches
    from ..runtimes.torch_runner import flatten_outputs

    teacher.eval()
    with torch.no_grad():
        cached = [(args, labels, flatten_outputs(teacher(*args)))
                  for args, labels in batches(split, names, 256, shuffle=False)]
    by_label = task == "classification" and split.labels is not None
    top1 = task == "classification" and cached[0][2][0].dim() == 2
    what = (f"top-1 on the {len(split)} calibration samples" if top1 and by_label else
            f"top-1 agreement with the source model on the {len(split)} calibration samples" if top1
            else f"-MSE to the source model over every output on the {len(split)} calibration samples")

    def score() -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for args, labels, target in cached:
                outs = flatten_outputs(student(*args))
                if top1:
                    want = labels if by_label else target[0].argmax(1)
                    total += float((outs[0].argmax(1) == want).sum())
                else:
                    total -= sum(float(((o.float() - t.float()) ** 2).mean()) for o, t in zip(outs, target)) * len(args[0])
                n += len(args[0])
        return total / n
    return score, what


def better(ptq: Attempt, trained: Attempt | None) -> Attempt:
    """The QAT rung's choice: the QAT attempt when its file was made and lost less than ``ptq``; on the same
    drop, or when it failed, the PTQ attempt stays."""
    if trained is None or trained.failed or not trained.drop < ptq.drop:
        return ptq
    return trained


def verdict(run: QatRun, ptq_drop: float, qat_drop: float | None, budget: float, precision: str) -> str:
    """The report's line on what QAT did."""
    if run.skipped:
        return run.skipped
    d = run.details
    how = (f"{d['epochs_run']} epoch(s) of {d['epochs']}, {d['seconds']:.1f} s, {d['samples']} "
           f"{'labelled ' if d['labels_used'] else ''}samples{' (' + d['stopped'] + ')' if 'stopped' in d else ''}"
           + (f", kept epoch {d['kept_epoch']} (best {d['scored_by']})"
              if d.get("kept_epoch") not in (None, d["epochs_run"]) else ""))
    if qat_drop is None:
        return f"QAT at {precision} ran ({how}) but its file could not be made; the PTQ file ships"
    if qat_drop >= ptq_drop:
        return (f"QAT at {precision} did not help (drop {qat_drop:.4f} vs PTQ {ptq_drop:.4f}; {how}): "
                "the PTQ file ships")
    met = "meets the budget" if qat_drop <= budget else f"still misses the budget ({budget:.4f})"
    return f"QAT at {precision}: drop {ptq_drop:.4f} -> {qat_drop:.4f}, {met} ({how})"
