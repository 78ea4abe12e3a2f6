"""The int8 ExecuTorch pass: PT2E with XNNPACK's quantizer (symmetric, per-channel weights, int8 activations),
calibrated on the calibration split, lowered to XNNPACK and validated in ExecuTorch's runtime. When it misses
the accuracy budget, the one ladder (quantize/ladder.py) excludes modules from quantization, worst first by ONNX
Runtime's one-layer-quantized output SNR on the reference graph, until the file meets the budget."""
from __future__ import annotations

import itertools
import tempfile
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core.attempt import Attempt, mark_chosen, run_attempts
from ..core.errors import EdgekitError, StageError
from ..export.executorch import example_args, lower, lowering_error
from ..export.xnnpack_rewrites import lift_integer_scalars
from ..export.job import Exported, PassContext
from .onnx_ort import QuantPlan, preprocess, weighted_nodes
from .sensitivity import rank_layers
from ..core.results import ExportInfo, ValidationResult
from ..measure.validate import validate_file
from .ladder import climb
from .onnx import _worst_snr

CALIBRATION_LIMIT = 128  # samples run through the observers (XNNPACK's histogram observers are slow)
SEARCH = "executorch int8"


class _Made(NamedTuple):
    """What an attempt made, for the pass itself (never serialised)."""
    excluded: frozenset  # the modules left out of quantization
    path: Path
    validation: ValidationResult | None
    delegation: dict  # the XNNPACK delegation summary
    samples: int  # calibration samples run through the observers


def _quantized_program(module, args: tuple, calibration, iospec, excluded: frozenset):
    import torch

    from ..runtimes.executorch import import_executorch
    import_executorch(lowering=True)
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    for name in sorted(excluded):
        quantizer.set_module_name(name, None)
    graph = torch.export.export(module, args).module()
    lift_integer_scalars(graph)
    prepared = prepare_pt2e(graph, quantizer)
    n = min(CALIBRATION_LIMIT, len(calibration))
    with torch.no_grad():
        for i in range(n):
            prepared(*(torch.from_numpy(np.ascontiguousarray(calibration.inputs[t.name][i:i + 1], dtype=t.dtype))
                       for t in iospec.inputs))
    return torch.export.export(convert_pt2e(prepared), args), n


def executorch_int8(src: Exported, ctx: PassContext) -> Exported:
    stage = "quantize executorch int8"
    if ctx.data.calibration is None or len(ctx.data.calibration) == 0:
        raise StageError(stage, "int8 ExecuTorch files need calibration samples: pass --data")
    model = ctx.model
    prof = ctx.profile
    budget, threads = prof.budget.max_accuracy_drop, prof.target.resolved_threads
    args = example_args(model, ctx.data.calibration)
    target = ctx.folder / f"{ctx.name}_int8.pte"
    with tempfile.TemporaryDirectory(prefix="edgekit-et-", dir=ctx.scratch) as tmp_name:
        tmp = Path(tmp_name)
        numbers = itertools.count()

        def attempt(excluded: frozenset, label: str) -> Attempt:
            path = tmp / f"a{next(numbers)}.pte"
            what = {"float_layers": tuple(sorted(excluded)), "weights": "ptq", "measured_in": "executorch"}
            try:
                try:
                    program, n = _quantized_program(model.module, args, ctx.data.calibration, model.iospec, excluded)
                except Exception as exc:  # noqa: BLE001 - torch.export or PT2E: this rung fails, the ladder goes on
                    raise lowering_error(stage, exc) from exc
                buffer, summary = lower(program, args, model.iospec, stage, prof.target.min_delegated_share, "int8")
                path.write_bytes(buffer)
                v = validate_file(path, ctx.reference, ctx.data, None, runtime="executorch", threads=threads,
                                  raise_on_failure=False)
            except EdgekitError as exc:
                ctx.log.write(f"ExecuTorch int8 attempt {label} failed: {exc}\n")
                return Attempt(SEARCH, label, **what, error=str(getattr(exc, "reason", exc))[:600],
                               made=_Made(excluded, path, None, {}, 0))
            return Attempt(SEARCH, label, **what, drop=float(v.drop), decided_by=v.decided_by, snr_db=_worst_snr(v),
                           measured_on=v.measured_on, bytes=len(buffer), made=_Made(excluded, path, v, summary, n))

        first, record = run_attempts([frozenset()], lambda excluded: attempt(
            excluded, "pt2e XNNPACKQuantizer symmetric per-channel"), budget, stage=stage,
            why_failed=lambda failed: failed[0].error)
        best, notes = first, []
        if first.drop > budget:
            best, repairs, notes = _repair(first, attempt, ctx, tmp)
            record += repairs
        target.write_bytes(best.made.path.read_bytes())
    details = {"quantizer": f"torchao PT2E + XNNPACKQuantizer (executorch {version('executorch')})",
               "quantization": "int8 activations, int8 symmetric per-channel weights", "calibration_samples":
               best.made.samples, "excluded_modules": sorted(best.made.excluded)}
    info = ExportInfo(f"executorch {version('executorch')} (PT2E int8, XNNPACK)", made_from=src.path.name,
                      notes=tuple(notes), details=details, delegation=best.made.delegation, attempts=mark_chosen(record, best), chosen=best.label)
    return replace(src, path=target, precision="int8", info=info,
                   validation=replace(best.made.validation, file=str(target)))


def _repair(first: Attempt, attempt, ctx: PassContext, tmp: Path) -> tuple[Attempt, list[Attempt], list[str]]:
    """Modules ranked by the reference ONNX graph's one-layer sensitivity (node -> its weight's module)."""
    import onnx

    started = time.perf_counter()
    box = ctx.profile.quantize.repair_time_box_s
    reference = ctx.folder / f"{ctx.name}.onnx"
    if not reference.is_file():
        return first, [], [f"repair skipped: no reference ONNX graph to rank layers on; drop {first.drop:.4f}"]
    pre = preprocess(reference, tmp / "pre.onnx")
    nodes = weighted_nodes(pre)
    proto = onnx.load(str(pre))
    modules = {n.name: n.input[1].removesuffix(".weight") for n in proto.graph.node if n.name in nodes and len(n.input) > 1}
    known = {name for name, _ in ctx.model.module.named_modules()}
    candidates = [n for n in nodes if modules.get(n) in known]
    if not candidates:
        return first, [], [f"repair skipped: the ONNX graph's layers do not name torch modules; drop {first.drop:.4f}"]
    ranking = rank_layers(pre, QuantPlan(8, "qdq-s8s8", ctx.profile.quantize.calibration), ctx.data.calibration, tmp,
                          candidates, seconds=box / 2)
    notes = ["sensitivity, ONNX Runtime's output SNR with only that layer quantized (worst first, dB): " +
             ", ".join(f"{modules[n]} {snr:.1f}" for n, snr in ranking[:5])]
    chosen, made, more = climb(frozenset(), [modules[n] for n, _ in ranking], ["float"],
                               lambda plan, m, level: plan | {m}, lambda plan, label: attempt(plan, label),
                               ctx.profile.budget.max_accuracy_drop, best=first, started=started, time_box_s=box)
    return chosen, made, notes + more
