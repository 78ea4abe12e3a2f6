"""The OpenVINO passes: fp16-compressed weights, bf16 inference, and int8 through NNCF with the repair ladder.

bf16 is a precision *hint*, not a weight format: the IR keeps fp16-compressed weights and the CPU plugin
computes in bf16. It is made only where the CPU has bf16, and kept only where it meets the budget (else the
fp16 file, computed in f32, stands in: the format table's fallback). int8 is NNCF's post-training
quantization on the calibration split (``ModelType.TRANSFORMER`` for graphs with attention); when it misses
the accuracy budget, the one ladder (quantize/ladder.py) moves the layers that ONNX Runtime's sensitivity ranking
puts worst into NNCF's ``ignored_scope``, one at a time.
"""
from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..core.artifact import file_digest
from ..core.attempt import Attempt, mark_chosen, run_attempts
from ..core.errors import EdgekitError, StageError
from ..export.job import Exported, PassContext
from ..export.openvino import ir_files, ov_call
from .passes import calibration_npz
from .onnx_ort import QuantPlan, has_attention, preprocess, weighted_nodes
from .sensitivity import rank_layers
from ..core.results import ExportInfo, ValidationResult
from ..measure.validate import validate_file
from .ladder import climb
from .onnx import _worst_snr

SEARCH = "openvino int8"


class _Made(NamedTuple):
    """What an attempt made, for the pass itself (never serialised)."""
    ignored: frozenset  # the IR ops in NNCF's ignored_scope
    path: Path
    validation: ValidationResult | None
    ov: dict  # what the quantize worker reported: versions, model type, samples, FakeQuantize nodes


def _copy_ir(src: Path, target: Path) -> None:
    for a, b in zip(ir_files(src), ir_files(target)):
        shutil.copyfile(a, b)


def _recompressed(src: Exported, ctx: PassContext, precision: str, hint: str, why: str) -> Exported:
    stage = f"quantize openvino {precision}"
    target = ctx.folder / f"{ctx.name}_{precision}.xml"
    made = ov_call("recompress", stage, ctx.log, src=str(src.path.resolve()), out=str(target.resolve()), hint=hint,
                   fp16=True)
    details = {"inference_precision_hint": hint, "weights": "fp16 (compressed; decompressed at load)",
               "computes_in": why}
    info = ExportInfo(f"openvino {made['version']} (save_model compress_to_fp16)", made_from=src.path.name,
                      details=details, runtime_options={"INFERENCE_PRECISION_HINT": hint})
    return replace(src, path=target, precision=precision, info=info, validation=None)


def openvino_fp16(src: Exported, ctx: PassContext) -> Exported:
    return _recompressed(src, ctx, "fp16", "f32", "f32 (fp16 is a size option: the CPU plugin decompresses "
                                                  "the weights and computes in f32)")


def openvino_bf16(src: Exported, ctx: PassContext) -> Exported:
    from ..runtimes.openvino import cpu_capabilities

    caps = cpu_capabilities()
    if "BF16" not in caps:
        raise StageError("quantize openvino bf16", f"this CPU has no bf16 (OpenVINO's CPU capabilities: "
                                                   f"{', '.join(caps)}); the fp16 file, computed in f32, is made instead")
    return _recompressed(src, ctx, "bf16", "bf16", "bf16 (the CPU's AVX512-BF16/AMX units)")


def openvino_int8(src: Exported, ctx: PassContext) -> Exported:
    stage = "quantize openvino int8"
    if ctx.data.calibration is None or len(ctx.data.calibration) == 0:
        raise StageError(stage, "int8 OpenVINO files need calibration samples: pass --data")
    prof = ctx.profile
    budget, threads = prof.budget.max_accuracy_drop, prof.target.resolved_threads
    reference_onnx = ctx.folder / src.info.made_from
    target = ctx.folder / f"{ctx.name}_int8.xml"
    transformer = has_attention(reference_onnx)
    with tempfile.TemporaryDirectory(prefix="edgekit-ov-", dir=ctx.scratch) as tmp_name:
        tmp = Path(tmp_name)
        calibration = str(calibration_npz(ctx.data.calibration, src.mapping, tmp / "calibration.npz").resolve())
        numbers = itertools.count()

        def attempt(ignored: frozenset, label: str) -> Attempt:
            path = tmp / f"a{next(numbers)}.xml"
            what = {"float_layers": tuple(sorted(ignored)), "weights": "ptq", "measured_in": "openvino"}
            try:
                made = ov_call("quantize", stage, ctx.log, src=str(src.path.resolve()), out=str(path.resolve()),
                               calibration=calibration, transformer=transformer, ignored=sorted(ignored), hint="f32")
                v = validate_file(path, ctx.reference, ctx.data, None, runtime="openvino", threads=threads,
                                  raise_on_failure=False)
            except EdgekitError as exc:
                ctx.log.write(f"OpenVINO int8 attempt {label} failed: {exc}\n")
                return Attempt(SEARCH, label, **what, error=str(exc)[:300], made=_Made(ignored, path, None, {}))
            return Attempt(SEARCH, label, **what, drop=float(v.drop), decided_by=v.decided_by, snr_db=_worst_snr(v),
                           measured_on=v.measured_on, bytes=file_digest(path)[1], made=_Made(ignored, path, v, made))

        first, record = run_attempts([frozenset()], lambda ignored: attempt(
            ignored, "nncf defaults" + (" (ModelType.TRANSFORMER)" if transformer else "")), budget, stage=stage,
            why_failed=lambda failed: failed[0].error)
        best, notes, repair_s = first, [], None
        if first.drop > budget:
            started = time.perf_counter()
            best, repairs, notes = _repair(first, attempt, reference_onnx, src, ctx, tmp)
            record += repairs
            repair_s = round(time.perf_counter() - started, 1)
        _copy_ir(best.made.path, target)
    made = best.made.ov
    details = {"quantizer": f"nncf {made['nncf']}", "model_type": made["model_type"],
               "calibration_samples": made["samples"], "fake_quantize_nodes": made["fake_quantize"],
               "ignored_scope": sorted(best.made.ignored), "repair_seconds": repair_s,
               "inference_precision_hint": "f32"}
    info = ExportInfo(f"openvino {made['version']} + nncf {made['nncf']} (quantize)",
                      made_from=src.path.name, notes=tuple(notes), details=details,
                      runtime_options={"INFERENCE_PRECISION_HINT": "f32"},
                      attempts=mark_chosen(record, best), chosen=best.label)
    return replace(src, path=target, precision="int8", info=info,
                   validation=replace(best.made.validation, file=str(target)))


def _repair(first: Attempt, attempt, reference_onnx: Path, src: Exported, ctx: PassContext, tmp: Path
            ) -> tuple[Attempt, list[Attempt], list[str]]:
    """Rank the graph's weighted layers by ONNX Runtime's one-layer-quantized output SNR, then climb: each
    rung adds the next worst layer to NNCF's ignored scope."""
    started = time.perf_counter()
    box = ctx.profile.quantize.repair_time_box_s
    pre = preprocess(reference_onnx, tmp / "pre.onnx")
    in_ir = ov_call("weighted_ops", "quantize openvino int8", ctx.log, src=str(src.path.resolve()))["ops"]
    # an ONNX node keeps its name in the IR, or becomes ops named after it ("node_linear/WithoutBiases")
    ir_ops = {n: [op for op in in_ir if op == n or op.startswith(n + "/")] for n in weighted_nodes(pre)}
    candidates = [n for n, ops in ir_ops.items() if ops]
    if not candidates:
        return first, [], [f"repair skipped: none of the ONNX graph's layers keeps its name in the IR; drop "
                           f"{first.drop:.4f}"]
    ranking = rank_layers(pre, QuantPlan(8, "qdq-s8s8", ctx.profile.quantize.calibration), ctx.data.calibration,
                          tmp, candidates, seconds=box / 2)
    notes = ["sensitivity, ONNX Runtime's output SNR with only that layer quantized (worst first, dB): " +
             ", ".join(f"{n} {snr:.1f}" for n, snr in ranking[:5])]
    chosen, made, more = climb(frozenset(), [n for n, _ in ranking], ["float"],
                               lambda plan, node, level: plan | frozenset(ir_ops[node]),
                               lambda plan, label: attempt(plan, label.replace("-> float", "-> ignored_scope")),
                               ctx.profile.budget.max_accuracy_drop, best=first, started=started, time_box_s=box)
    return chosen, made, notes + [n.replace("moved to float", "left float (ignored_scope)") for n in more]
