"""The int8/int4 ONNX passes: try arrangements, keep the fastest file that meets the accuracy budget
(latency check), and repair accuracy with the ladder, moving the most sensitive layers up in precision."""
from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from ..measure.bench import bench_file
from ..export.job import Exported, PassContext
from ..export.onnx import export_onnx
from ..core.attempt import Attempt, mark_chosen, run_attempts
from ..core.errors import EdgekitError
from .onnx_ort import (ARRANGEMENTS, ATTENTION_ONLY, QuantPlan, attention_path, has_attention,
                                     preprocess, quantize_onnx, weighted_nodes)
from .sensitivity import rank_layers
from ..core.results import ExportInfo, ValidationResult
from ..measure.validate import validate_file
from .ladder import climb
from .qat import better, train, verdict, wanted

SAME_SPEED = 0.05  # p50s within 5% of the fastest count as equally fast (the machine's noise)
SAME_SNR_DB = 1.0  # output SNRs within 1 dB count as equally faithful
UNFAITHFUL_DB, UNFAITHFUL_HANDICAP = 10.0, 1.2  # 10 dB less faithful must be >25% faster to win
SNR_CAP_DB = 60.0  # beyond this, output noise is at float's own level: compared as equal


def choose(attempts: list[Attempt], float_p50: float | None, budget: float) -> tuple[Attempt, list[str]]:
    """The fastest attempt within the accuracy budget; among those within 5% of the fastest, the
    ones within 10 dB of the most faithful output (SNR against float), then the smallest drop, then
    the most faithful, then the smallest file. An attempt 10 dB or more below the most faithful
    passing one is timed with a 20% handicap (so with the 5% band it must be over 25% faster): a
    large fidelity loss (e.g. int16 saturation in U8S8 kernels) must buy a real speedup, not noise.
    If none is within budget, the most accurate. Pure, for tests; ``attempts`` are made (not failed)."""
    passing = [a for a in attempts if a.drop <= budget]
    notes = []
    if passing:
        timed = [a for a in passing if a.p50_ms is not None] or passing
        top_snr = max(_snr(a) for a in timed)

        def p50(a: Attempt) -> float:
            ms = a.p50_ms or float("inf")
            return ms * UNFAITHFUL_HANDICAP if _snr(a) <= top_snr - UNFAITHFUL_DB else ms

        fastest = min(p50(a) for a in timed)
        near = [a for a in timed if p50(a) <= fastest * (1 + SAME_SPEED)]
        top_near = max(_snr(a) for a in near)
        near = [a for a in near if _snr(a) == top_near or _snr(a) > top_near - UNFAITHFUL_DB]
        near = [a for a in near if a.drop <= min(b.drop for b in near)]
        faithful = max(_snr(a) for a in near)
        near = [a for a in near if _snr(a) >= faithful - SAME_SNR_DB]
        best = min(near, key=lambda a: a.bytes or 0)
    else:
        best = min(attempts, key=lambda a: (a.drop, -_snr(a)))
        notes.append(f"no attempt meets the accuracy budget ({budget:.4f}); kept the most accurate "
                     f"(drop {best.drop:.4f}, gap {best.drop - budget:.4f})")
    if float_p50 and best.p50_ms and best.p50_ms > float_p50 * 1.2:  # beyond the latency check's noise
        notes.append(f"{best.label} is slower than its fp32 twin ({best.p50_ms:.3f} vs {float_p50:.3f} ms p50)")
    return best, notes


def _worst_snr(v) -> float | None:
    """The lowest output SNR of a validation (every output counts, not only the first)."""
    snrs = [o["snr_db"] for o in v.outputs.values() if o.get("snr_db") is not None]
    return min(snrs) if snrs else None


def _snr(attempt: Attempt) -> float:
    snr = attempt.snr_db
    return float("-inf") if snr is None else min(float(snr), SNR_CAP_DB)


def onnx_quantized(precision: str):
    """The pass that writes ``<name>_<precision>.onnx`` (int8 or int4) from the fp32 file."""
    def run(src: Exported, ctx: PassContext) -> Exported:
        return _quantize(src, ctx, precision)
    return run


class _Made(NamedTuple):
    """What an attempt made, for the pass itself (never serialised)."""
    plan: QuantPlan
    path: Path
    graph: Path  # the pre-processed graph it quantized (the PTQ one, or the QAT-trained one)
    info: dict
    validation: ValidationResult | None


def _quantize(src: Exported, ctx: PassContext, precision: str) -> Exported:
    target = ctx.folder / f"{ctx.name}_{precision}.onnx"
    prof = ctx.profile
    budget, threads = prof.budget.max_accuracy_drop, prof.target.resolved_threads
    quick = {"warmup": prof.bench.warmup, "runs": prof.bench.attempt_runs, "batch": 1,
             "max_seconds": prof.bench.attempt_max_seconds}
    search = f"onnx {precision}"
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-", dir=ctx.scratch) as tmp_name:
        tmp = Path(tmp_name)
        pre = preprocess(src.path, tmp / "pre.onnx")
        layer_names = _layer_names(pre)
        numbers = itertools.count()
        one = {k: v[:1] for k, v in ctx.data.validation.inputs.items()}  # a real sample: dynamic axes at their size

        def attempt(plan: QuantPlan, label: str, graph: Path = pre) -> Attempt:
            path = tmp / f"a{next(numbers)}.onnx"
            what = {"plan": plan.describe(), "weights": "ptq" if graph == pre else "qat", "measured_in": "onnxruntime",
                    "float_layers": tuple(sorted(layer_names.get(n, n) for n in plan.float_nodes)),
                    "int8_layers": tuple(sorted(layer_names.get(n, n) for n in plan.int8_nodes))}
            try:
                info = quantize_onnx(graph, path, ctx.data.calibration, plan, ctx.log)
                v = validate_file(path, ctx.reference, ctx.data, None, runtime="onnxruntime", threads=threads,
                                  raise_on_failure=False)
                p50 = bench_file(path, threads=threads, inputs=one, **quick).p50_ms
            except EdgekitError as exc:  # ORT wrote a graph it cannot load or run: this arrangement fails
                ctx.log.write(f"quantization attempt {label} failed: {exc}\n")
                return Attempt(search, label, **what, error=str(exc)[:300],
                               made=_Made(plan, path, graph, {}, None)).judged(budget)
            return Attempt(search, label, **what, drop=float(v.drop), decided_by=v.decided_by, snr_db=_worst_snr(v),
                           measured_on=v.measured_on, p50_ms=p50, bytes=path.stat().st_size,
                           made=_Made(plan, path, graph, info, v)).judged(budget)

        bits = 4 if precision == "int4" else 8
        calib = prof.quantize.calibration
        attention = has_attention(pre)
        if bits == 8:  # latency check: every arrangement, measured
            tries = [(QuantPlan(8, a, calib), a) for a in ARRANGEMENTS if a not in ATTENTION_ONLY or attention]
        else:
            tries = [(QuantPlan(4, "qdq-u8s8", calib), "int4 qdq-u8s8")] + (
                [(QuantPlan(4, "qdq-u8s8-float-attention", calib), "int4 qdq-u8s8-float-attention")] if attention
                else [])
        _, record = run_attempts(tries, lambda t: attempt(*t), budget, stop_within=False, stage=f"quantize {search}",
                                 why_failed=lambda failed: f"every arrangement failed ({len(failed)}); the first, "
                                                           f"{failed[0].label}: {failed[0].error[:240]}")
        best, first_notes = choose([a for a in record if not a.failed], ctx.float_p50_ms, budget)
        best, confirm_notes = _confirm_speedup(best, [a for a in record if a.passed], threads, one, quick)
        first_notes += confirm_notes
        qat_details, first, notes = None, best, []
        if wanted(ctx, best.drop > budget):
            best, qat_note, qat_details, trained = _qat(best, attempt, ctx, bits, precision, tmp)
            record += trained
            notes.append(qat_note)
            layer_names.update(_layer_names(best.made.graph))
        if best.drop > budget:
            best, repairs, repair_notes = _repair(best, attempt, best.made.graph, ctx, layer_names, tmp)
            record += repairs
            notes += repair_notes
        if best is not first or first.drop > budget:  # the final state first, then the history
            best, more = choose([a for a in record if a.passed] or [best], ctx.float_p50_ms, budget)
            notes = [n for n in notes + more if n.startswith(("repaired", "QAT"))] + [
                n for n in notes + more if not n.startswith(("repaired", "QAT"))]
        else:
            notes = first_notes + notes
        shutil.copyfile(best.made.path, target)
    details = {k: v for k, v in best.made.info.items() if k != "quantizer"}
    if qat_details is not None:
        details["qat"] = {**qat_details, "shipped": best.made.graph != pre}
        after = qat_details.get("drop_after")
        if not details["qat"]["shipped"] and after is not None and after < qat_details["drop_before"]:
            notes.append(f"the QAT file (drop {after:.4f}) does not ship: the latency check chose {best.label} "
                         f"(within the budget, {best.p50_ms:.3f} ms p50)")
    info = ExportInfo(best.made.info["quantizer"], made_from=src.path.name, notes=tuple(notes), details=details,
                      attempts=mark_chosen(record, best), chosen=best.label)
    return Exported(target, "onnx", precision, info, validation=replace(best.made.validation, file=str(target)))


def _confirm_speedup(best: Attempt, passing: list[Attempt], threads: int, one: dict, quick: dict
                     ) -> tuple[Attempt, list[str]]:
    """A winner 10 dB or more less faithful than the most faithful passing attempt won on one short timing
    each. Time the two again, interleaved (3 rounds each, alternating), and keep the winner only if it is
    still faster by the handicap and the noise band; otherwise the faithful one ships."""
    rival = max(passing, key=_snr, default=best)
    if rival is best or _snr(best) > _snr(rival) - UNFAITHFUL_DB:
        return best, []
    times: dict[str, list[float]] = {best.label: [], rival.label: []}
    for _ in range(3):
        for a in (best, rival):
            times[a.label].append(bench_file(a.made.path, threads=threads, inputs=one, **quick).p50_ms)
    fast, slow = min(times[best.label]), min(times[rival.label])
    if fast * UNFAITHFUL_HANDICAP * (1 + SAME_SPEED) < slow:
        return best, [f"{best.label} ({_snr(best):.1f} dB) ships over the more faithful {rival.label} "
                      f"({_snr(rival):.1f} dB): timed again interleaved it is {slow / fast:.2f}x as fast"]
    return rival, [f"{rival.label} ({_snr(rival):.1f} dB) ships: {best.label} ({_snr(best):.1f} dB) looked faster "
                   f"once but timed again interleaved it is {slow / fast:.2f}x as fast, not the "
                   f"{UNFAITHFUL_HANDICAP * (1 + SAME_SPEED):.2f}x its fidelity loss needs"]


def _repair(best: Attempt, attempt, pre: Path, ctx: PassContext, names: dict, tmp: Path
            ) -> tuple[Attempt, list[Attempt], list[str]]:
    """Rank layers by output SNR with only that layer quantized, then climb the ladder."""
    started = time.perf_counter()
    box = ctx.profile.quantize.repair_time_box_s
    plan: QuantPlan = best.made.plan
    candidates = [n for n in weighted_nodes(pre) if n not in plan.float_nodes]
    if has_attention(pre):  # activation-only nodes (mask path, softmax, Q.K^T): the ladder can float them too
        candidates += sorted(n for n in attention_path(pre) if n not in plan.float_nodes and n not in candidates)
    ranking = rank_layers(pre, plan, ctx.data.calibration, tmp, candidates, seconds=box / 2)
    notes = ["sensitivity, output SNR with only that layer quantized (worst first, dB): " +
             ", ".join(f"{names.get(n, n)} {snr:.1f}" for n, snr in ranking[:5])]
    levels = ["int8", "float"] if plan.bits == 4 else ["float"]

    def promote(current: QuantPlan, node: str, level: str) -> QuantPlan:
        if level == "int8":
            return replace(current, int8_nodes=current.int8_nodes | {node})
        return replace(current, float_nodes=current.float_nodes | {node}, int8_nodes=current.int8_nodes - {node})

    def on_graph(current: QuantPlan, label: str) -> Attempt:
        return attempt(current, label + (" (QAT weights)" if best.weights == "qat" else ""), graph=pre)

    chosen, made, more = climb(plan, [n for n, _ in ranking], levels, promote, on_graph,
                               ctx.profile.budget.max_accuracy_drop, best=best, started=started, time_box_s=box,
                               name=lambda n: names.get(n, n))
    return chosen, made, notes + more


def _qat(best: Attempt, attempt, ctx: PassContext, bits: int, precision: str, tmp: Path
         ) -> tuple[Attempt, str, dict, list[Attempt]]:
    """QAT on ORT's weight grid, its file made with the chosen arrangement; the better of it and ``best``
    (the QAT rung), the note, QAT's details and the attempts it made."""
    run = train(ctx, "onnx", bits)
    if run.skipped:
        return best, run.skipped, dict(run.details), []
    path = tmp / "qat.onnx"
    try:
        export_onnx(run.model, path, ctx.log)
        graph = preprocess(path, tmp / "qat-pre.onnx")
    except Exception as exc:  # noqa: BLE001 - a failed QAT graph must not cost the validated PTQ file
        ctx.log.write(f"QAT graph export failed: {exc!r}\n")
        return best, verdict(run, best.drop, None, ctx.profile.budget.max_accuracy_drop, precision), {
            **run.details, "error": str(exc)[:300]}, []
    # the grid QAT trained on is the full 8-bit one: a reduce-range (7-bit) arrangement gives way to its twin
    plan = replace(best.made.plan, float_nodes=frozenset(), int8_nodes=frozenset(), only_nodes=frozenset(),
                   arrangement=best.made.plan.arrangement.removesuffix("-reduce-range"))
    entry = attempt(plan, f"qat: {precision} {plan.arrangement}", graph=graph)
    drop = None if entry.failed else entry.drop
    note = verdict(run, best.drop, drop, ctx.profile.budget.max_accuracy_drop, precision)
    details = {**run.details, "drop_before": best.drop, "drop_after": drop}
    return better(best, entry), note, details, [entry]


def _layer_names(path: Path) -> dict[str, str]:
    """Node name -> layer name (its weight's name without '.weight'), for readable reports."""
    import onnx

    proto = onnx.load(str(path))
    nodes = weighted_nodes(path)
    return {n.name: n.input[1].removesuffix(".weight") for n in proto.graph.node if n.name in nodes and len(n.input) > 1}
