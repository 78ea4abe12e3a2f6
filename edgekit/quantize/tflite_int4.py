"""The int4 TFLite pass: ai-edge-quantizer's weight-only int4 file, repaired with the ladder when it
misses the accuracy budget. Layers are ranked by the drop each causes alone at int4 (measured in
LiteRT), then moved up worst first, int4 -> int8 weights and then int8 -> float (NO_QUANTIZE)."""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..export.job import Exported, ExportJob, PassContext
from .tflite_int4_recipe import write_int4
from ..core.attempt import Attempt, mark_chosen
from ..core.results import ExportInfo, ValidationResult
from ..runtimes import open_runner
from ..files.tflite_info import read_tflite
from ..measure.validate import validate_file
from .ladder import climb, out_of_time
from .onnx import _worst_snr
from .qat import better, train, verdict, wanted

EXPORTER = "ai-edge-quantizer (weight-only int4, float compute)"
SEARCH = "tflite int4"


class _Made(NamedTuple):
    """What an attempt made, for the pass itself (never serialised)."""
    path: Path
    base: Exported  # the fp32 .tflite it quantized (the PTQ one, or the QAT-trained one)
    validation: ValidationResult


def _judged(label: str, path: Path, v: ValidationResult, base: Exported, budget: float, *, int8: tuple = (),
            floats: tuple = (), weights: str = "ptq") -> Attempt:
    return Attempt(SEARCH, label, float_layers=tuple(floats), int8_layers=tuple(int8), weights=weights,
                   drop=float(v.drop), decided_by=v.decided_by, snr_db=_worst_snr(v), measured_in="litert",
                   measured_on=v.measured_on, bytes=path.stat().st_size, made=_Made(path, base, v)).judged(budget)


def tflite_int4(src: Exported, ctx: PassContext) -> Exported:
    """``<name>_int4.tflite`` from the fp32 .tflite ``src``, repaired to the accuracy budget."""
    target = ctx.folder / f"{ctx.name}_int4.tflite"
    prof = ctx.profile
    threads, budget, box = prof.target.resolved_threads, prof.budget.max_accuracy_drop, prof.quantize.repair_time_box_s
    started = time.perf_counter()

    def check(path: Path, mapping=src.mapping):
        runner = open_runner(path, "litert", threads=threads, mapping=mapping)  # the file's own layout
        return validate_file(path, ctx.reference, ctx.data, None, runtime="litert", threads=threads,
                             raise_on_failure=False, runner=runner)

    write_int4(ctx.tf, src.path, target)
    best = first = _judged("int4 everywhere it applies", target, check(target), src, budget)
    record, details, notes = [first], {}, []
    with tempfile.TemporaryDirectory(prefix="edgekit-int4-", dir=ctx.scratch) as tmp:
        if wanted(ctx, first.drop > budget):
            best, note, details["qat"], trained = _qat(src, ctx, best, check, Path(tmp))
            notes.append(note)
            record += trained
            started = time.perf_counter()  # the repair's own time box starts after training
        if best.drop > budget:
            details["repair_weights"] = "qat" if best.made.base is not src else "ptq"
            best, repairs, more = _repair(best.made.base, ctx, best.made.path, best, check, Path(tmp), details,
                                          started, box, budget)
            record += repairs
            notes += more
        if best.made.path != target:
            shutil.copyfile(best.made.path, target)
    if "qat" in details:
        details["qat"]["shipped"] = best.made.base is not src
    details["int8_layers"], details["float_layers"] = list(best.int8_layers), list(best.float_layers)
    info = ExportInfo(EXPORTER, made_from=src.path.name, notes=tuple(notes), details=details,
                      attempts=mark_chosen(record, best), chosen=best.label)
    return Exported(target, "tflite", "int4", info, best.made.base.mapping,
                    validation=replace(best.made.validation, file=str(target)))


def _qat(src: Exported, ctx: PassContext, best: Attempt, check, tmp: Path) -> tuple[Attempt, str, dict, list[Attempt]]:
    """QAT on ai-edge-quantizer's int4 grid; the trained model converted as the fp32 file was, then made
    int4 by the same quantizer. The better of it and ``best`` (the QAT rung), the note, QAT's details and the
    attempt it made."""
    from ..export.onnx import export_onnx
    from ..export.tflite import export_tflite_torch

    run = train(ctx, "tflite", 4)
    if run.skipped:
        return best, run.skipped, dict(run.details), []
    budget = ctx.profile.budget.max_accuracy_drop
    folder = tmp / "qat"
    folder.mkdir()
    try:
        export_onnx(run.model, tmp / "qat.onnx", ctx.log)
        job = ExportJob(run.model, folder, tmp, ctx.log, ctx.tf, reference_onnx=tmp / "qat.onnx",
                        calibration=ctx.data.calibration)
        base = export_tflite_torch(job)[0]
        path = tmp / "qat_int4.tflite"
        write_int4(ctx.tf, base.path, path)
        v = check(path, base.mapping)
    except Exception as exc:  # noqa: BLE001 - a failed QAT file must not cost the validated PTQ file
        ctx.log.write(f"QAT file failed: {exc!r}\n")
        return best, verdict(run, best.drop, None, budget, "int4"), {**run.details, "error": str(exc)[:300]}, []
    note = verdict(run, best.drop, v.drop, budget, "int4")
    details = {**run.details, "drop_before": best.drop, "drop_after": v.drop}
    trained = _judged("qat: int4 everywhere it applies", path, v, base, budget, weights="qat")
    return better(best, trained), note, details, [trained]


def _repair(src, ctx, target, best: Attempt, check, tmp: Path, details: dict, started: float, box: float,
            budget: float) -> tuple[Attempt, list[Attempt], list[str]]:
    first = read_tflite(target)
    scopes = first.scopes
    quantized = [w for w, p in first.precision_map.items() if p == "int4"]
    ranked, notes = [], []
    probe = tmp / "probe.tflite"
    for weight in quantized:
        if out_of_time(started, box):
            notes.append(f"repair stopped at its {box:g} s time box while ranking layers "
                         f"({len(ranked)} of {len(quantized)} measured)")
            break
        write_int4(ctx.tf, src.path, probe, only=scopes[weight])
        ranked.append((check(probe, src.mapping).drop, weight))
    ranked.sort(reverse=True)
    details["sensitivity"] = [{"layer": w, "drop_alone": d} for d, w in ranked]
    if len(ranked) < len(quantized):  # no time left to move any layer
        return best, [], notes
    count = [0]
    weights = details.get("repair_weights", "ptq")

    def promote(plan: tuple, weight: str, level: str) -> tuple:
        int8, floats = plan
        if level == "int8":
            return int8 + (weight,), floats
        return tuple(w for w in int8 if w != weight), floats + (weight,)

    def attempt(plan: tuple, label: str) -> Attempt:
        int8, floats = plan
        count[0] += 1
        path = tmp / f"attempt{count[0]}.tflite"
        write_int4(ctx.tf, src.path, path, int8_scopes=tuple(scopes[w] for w in int8),
                   float_scopes=tuple(scopes[w] for w in floats))
        v = check(path, src.mapping)
        return _judged(label + (" (QAT weights)" if weights == "qat" else ""), path, v, src, budget, int8=int8,
                       floats=floats, weights=weights)

    chosen, made, more = climb(((), ()), [w for _, w in ranked], ["int8", "fp32"], promote, attempt, budget,
                               best=best, started=started, time_box_s=box)
    if quantized and len(chosen.float_layers) == len(quantized):
        more.append("every layer ended in float: the file holds no int4 weights")
    return chosen, made, notes + more
