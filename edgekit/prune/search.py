"""Accuracy-aware back-off: the profile's ratio is a ceiling; search down a grid of ratios (by
bisection, time-boxed) for the most aggressive one whose *exported* fp32 file, after recovery,
stays within the pruning share of the accuracy budget. Every attempt is recorded."""
from __future__ import annotations

import dataclasses
import io
import os
import time
import traceback
from pathlib import Path
from typing import Callable

from ..core.attempt import Attempt, mark_chosen
from ..core.data import Data
from ..core.errors import UsageError, one_line
from ..core.metrics import PRIMARY
from ..core.model import Model
from ..targets.profiles import DeviceProfile
from .chain import Plan, resolve_importance, run_chain
from .compression import Compression, grid, prunable
from .layers import attention_layers, output_layers, resolve_keep
from ..measure.validate import Reference, judge, validate_file

SEARCH = "prune"


def _attempt(model: Model, data: Data, reference: Reference, prof: DeviceProfile, plan: Plan, ratio: float, origin,
             allowed: float, threads: int, scratch: Path, number: int, log, progress, passing: dict, index: int
             ) -> Attempt:
    """One ratio: compress, judge in torch (every output), then export and judge the fp32 file in ONNX Runtime."""
    from ..export.onnx import export_onnx
    from ..files.graph_stats import onnx_stats
    from ..runtimes.base import run_batched
    from ..runtimes.torch_runner import TorchRunner

    module, details = run_chain(model, data, prof, plan, ratio, origin, threads=threads, progress=progress)
    outputs = run_batched(TorchRunner(module, model.iospec, threads), data.validation.inputs)
    metrics, torch_drop, _, decided = judge(outputs, reference, data.validation.labels)
    params = int(sum(p.numel() for p in module.parameters()))
    figures = {"metric": metrics.get(PRIMARY[data.task]), "torch_drop": torch_drop, "params_torch": params,
               "ratio_reached": round(1 - params / max(1, sum(p.numel() for p in model.module.parameters())), 4),
               "recovery": details["recovery"]["method"]}
    if not torch_drop <= allowed:  # NaN included
        return Attempt(SEARCH, _label(ratio), ratio=ratio, drop=torch_drop, decided_by=decided, figures=figures,
                       measured_in="torch (over budget before export, not exported)").judged(allowed)
    twin = dataclasses.replace(model, module=module)
    path = scratch / f"attempt-{number}.onnx"
    how = export_onnx(twin, path, log, screening=True)
    checked = validate_file(path, reference, data, None, runtime="onnxruntime", threads=threads,
                            raise_on_failure=False)
    stats = onnx_stats(path)
    figures.update(params=stats["params"], macs=stats["macs"], zip_bytes=stats["zip_bytes"])
    entry = Attempt(SEARCH, _label(ratio), ratio=ratio, drop=checked.drop, decided_by=checked.decided_by,
                    measured_in=f"onnxruntime, exported fp32 file ({how['exporter']}, for screening)",
                    measured_on=checked.measured_on, bytes=stats["bytes"], figures=figures).judged(allowed)
    if entry.passed:
        passing[index] = (module, details)
    return entry


def _label(ratio: float) -> str:
    return f"ratio {ratio:.2f}"


def compress(model: Model, data: Data, reference: Reference, prof: DeviceProfile, scratch: Path, *,
             log: io.StringIO | None = None, progress: Callable[[str], None] | None = None) -> Compression:
    import torch

    from ..measure.bench import bench_file
    from ..export.onnx import export_onnx
    from ..files.graph_stats import onnx_stats

    log = log if log is not None else io.StringIO()
    cfg = prof.prune
    threads = os.cpu_count() or 1  # training and screening run on the build machine's cores, not the device's
    started = time.perf_counter()
    args = tuple(torch.from_numpy(model.example_inputs[n]) for n in model.iospec.input_names)
    kept = resolve_keep(model.module, cfg.keep)
    heads = output_layers(model.module, args)
    attention, blocks = attention_layers(model.module)
    protect = kept | set(heads) | attention
    importance, notes = resolve_importance(cfg.importance, data)
    if blocks and cfg.method == "structured":
        notes.append(f"structured pruning leaves the {len(blocks)} attention block(s) whole ({blocks[0]}, ...): "
                     "their projections split into heads by reshapes; feed-forward channels are pruned")
    method = cfg.method if cfg.max_ratio > 0 else "none"
    if method == "structured" and not prunable(model.module, cfg.round_to, protect):
        notes.append(f"structured pruning: no layer has more than {cfg.round_to} output channels to prune "
                     "(prune.round_to), so there is nothing to remove")
        method = "none"
    plan = Plan(method, importance, frozenset(protect), frozenset(kept))
    allowed = prof.budget.max_accuracy_drop * cfg.accuracy_share
    primary = reference.primary_output
    origin = reference.outputs[primary]
    settings = {"method": method, "ceiling": cfg.max_ratio if method != "none" else 0.0, "importance": importance,
                "round_to": cfg.round_to, "keep": list(cfg.keep), "never_pruned": sorted(protect),
                "output_layers": heads, "lowrank_energy": cfg.lowrank, "share_bits": cfg.share_bits,
                "allowed_drop": allowed, "budget_share": cfg.accuracy_share, "time_box_s": cfg.time_box_s}

    if method == "none" and cfg.lowrank == 0 and cfg.share_bits == 0:
        return Compression(model, reference, False, 0.0, {}, (), {}, settings, tuple(notes))
    scratch.mkdir(parents=True, exist_ok=True)
    source_onnx = scratch / "source.onnx"
    export_onnx(model, source_onnx, log)
    before = onnx_stats(source_onnx)
    b = prof.bench
    one = {k: v[:1] for k, v in data.validation.inputs.items()}
    before["latency"] = bench_file(source_onnx, runtime="onnxruntime", threads=prof.target.resolved_threads,
                                   warmup=b.warmup, runs=b.runs, batch=1, max_seconds=b.max_seconds,
                                   inputs=one).to_dict()

    ratios = grid(settings["ceiling"], cfg.step) if method != "none" else [0.0]
    trivial_zero = cfg.lowrank == 0 and cfg.share_bits == 0  # ratio 0 is then the source itself
    attempts: list[Attempt] = []
    tried: dict[int, Attempt] = {}
    passing: dict[int, tuple] = {}
    fail, ok = -1, (len(ratios) - 1 if trivial_zero else len(ratios))
    index: int | None = 0 if not (trivial_zero and len(ratios) == 1) else None
    timed_out = False
    while index is not None:
        if attempts and time.perf_counter() - started > cfg.time_box_s:
            notes.append(f"the search stopped at its time box ({cfg.time_box_s:g} s) after {len(attempts)} attempts")
            timed_out = True
            break
        ratio = ratios[index]
        t0 = time.perf_counter()
        if progress is not None:
            progress(f"compress: attempt {len(attempts) + 1}, ratio {ratio:.2f}")
        try:
            entry = _attempt(model, data, reference, prof, plan, ratio, origin, allowed, threads, scratch,
                             len(attempts) + 1, log, progress, passing, index)
        except UsageError:
            raise
        except Exception as exc:  # the pruned graph no longer runs or exports: a failed attempt, back off
            log.write(f"compress attempt at ratio {ratio:.2f} failed:\n{traceback.format_exc()}")
            entry = Attempt(SEARCH, _label(ratio), ratio=ratio, error=one_line(exc),
                            measured_in="failed: the pruned model does not run or export").judged(allowed)
        entry = dataclasses.replace(entry, seconds=round(time.perf_counter() - t0, 2))
        attempts.append(entry)
        tried[index] = entry
        log.write(f"compress attempt: {entry.to_dict()}\n")
        if entry.passed:
            ok = index
        else:
            fail = index
        index = (fail + ok) // 2 if ok - fail > 1 else None

    settings["search_seconds"] = round(time.perf_counter() - started, 2)
    if ok in passing:
        module, details = passing[ok]
        path = scratch / "chosen.onnx"  # the shipped graph comes from the main exporter, exported once
        info = export_onnx(dataclasses.replace(model, module=module), path, log)
        twin = dataclasses.replace(model, module=module, onnx_path=path,
                                   meta={**model.meta, "onnx_export": {**info, "from": "the pruning search"}})
        return Compression(twin, reference.for_model(twin, data, threads), True,
                           ratios[ok], before, mark_chosen(attempts, tried[ok]), details, settings, tuple(notes))
    if attempts:
        notes.append(f"no attempt {'made before the time box ' if timed_out else ''}stayed within the pruning share "
                     f"of the accuracy budget (drop <= {allowed:.4f}); the model is exported uncompressed")
    return Compression(model, reference, False, 0.0, before, tuple(attempts), {}, settings, tuple(notes))
