"""The full-integer int8 TFLite pass: the TFLite converter's file from the exporter's SavedModel, validated in
LiteRT; when it misses the accuracy budget (or ``qat.mode = "always"``), a copy trained on the converter's
grid (int8 weights per output channel, ``max|w| / 127``; 8-bit layer inputs with the calibration split's
min-max ranges) is exported and converted the same way, and the better of the two files ships. When both
miss, the plan's int16x8 fallback is added after this pass, as before."""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from ..core.attempt import Attempt, mark_chosen
from ..core.errors import EdgekitError
from ..export.job import Exported, ExportJob, PassContext
from .passes import tflite_converted
from ..runtimes import open_runner
from ..measure.validate import validate_file
from .onnx import _worst_snr
from .qat import better, train, verdict, wanted

_convert = tflite_converted("int8")
SEARCH = "tflite int8"


def tflite_int8(src: Exported, ctx: PassContext) -> Exported:
    made = _convert(src, ctx)
    if src.saved_model is None:  # ai-edge-quantizer's dynamic-range file: int8 weights, float activations
        return made
    threads = ctx.profile.target.resolved_threads

    def check(path: Path, mapping):
        runner = open_runner(path, "litert", threads=threads, mapping=mapping)
        return validate_file(path, ctx.reference, ctx.data, None, runtime="litert", threads=threads,
                             raise_on_failure=False, runner=runner)

    first = check(made.path, made.mapping)
    if first.failures:  # outputs missing or misshapen: the measure stage reports it as it always has
        return made
    budget = ctx.profile.budget.max_accuracy_drop
    if not wanted(ctx, first.drop > budget):
        return replace(made, validation=first)
    ptq = _attempt("ptq: int8 full integer", made.path, first, budget, "ptq")
    run = train(ctx, "tflite", 8)
    if run.skipped:
        return _with(made, first, run.skipped, dict(run.details))
    with tempfile.TemporaryDirectory(prefix="edgekit-int8-", dir=ctx.scratch) as tmp:
        tmp = Path(tmp)
        folder = tmp / "qat"
        folder.mkdir()
        try:
            from ..export.onnx import export_onnx
            from ..export.tflite import export_tflite_onnx2tf

            export_onnx(run.model, tmp / "qat.onnx", ctx.log)
            job = ExportJob(run.model, folder, tmp, ctx.log, ctx.tf, reference_onnx=tmp / "qat.onnx",
                            calibration=ctx.data.calibration)
            base = export_tflite_onnx2tf(job)[0]  # the PTQ file's route: a SavedModel for the converter
            if base.saved_model is None:
                raise EdgekitError("onnx2tf left no SavedModel for the converter")
            trained = _convert(base, replace(ctx, folder=tmp, scratch=tmp))
            if trained.info.details.get("quantization") != "full integer":
                raise EdgekitError("the converter did not write a full-integer file: " +
                                   "; ".join(trained.info.notes)[:200])
            v = check(trained.path, trained.mapping)
            if v.failures:
                raise EdgekitError("; ".join(v.failures))
        except Exception as exc:  # noqa: BLE001 - as above: the PTQ file stays
            ctx.log.write(f"QAT int8 TFLite file failed: {exc!r}\n")
            failed = Attempt(SEARCH, "qat: int8 full integer", weights="qat", measured_in="litert",
                             error=str(exc)[:300]).judged(budget)
            return _with(made, first, verdict(run, first.drop, None, budget, "int8"),
                         {**run.details, "error": str(exc)[:300], "drop_before": first.drop, "drop_after": None,
                          "shipped": False}, (ptq, failed), ptq)
        trained_attempt = _attempt("qat: int8 full integer", trained.path, v, budget, "qat")
        chosen = better(ptq, trained_attempt)
        note = verdict(run, first.drop, v.drop, budget, "int8")
        details = {**run.details, "drop_before": first.drop, "drop_after": v.drop, "shipped": chosen is not ptq}
        if not details["shipped"]:
            return _with(made, first, note, details, (ptq, trained_attempt), ptq)
        shutil.copyfile(trained.path, made.path)  # the QAT file takes the PTQ file's place
    shipped = _with(made, v, note, details, (ptq, trained_attempt), trained_attempt)
    return replace(shipped, mapping=trained.mapping, validation=replace(v, file=str(made.path)))


def _attempt(label: str, path: Path, v, budget: float, weights: str) -> Attempt:
    return Attempt(SEARCH, label, weights=weights, drop=float(v.drop), decided_by=v.decided_by, snr_db=_worst_snr(v),
                   measured_in="litert", measured_on=v.measured_on, bytes=path.stat().st_size).judged(budget)


def _with(made: Exported, validation, note: str, details: dict, attempts: tuple = (),
          chosen: Attempt | None = None) -> Exported:
    info = replace(made.info, notes=made.info.notes + (note,), details={**made.info.details, "qat": details})
    if chosen is not None:  # the QAT rung ran: PTQ and QAT, the better one shipped
        info = replace(info, attempts=mark_chosen(attempts, chosen), chosen=chosen.label)
    return replace(made, info=info, validation=validation)
