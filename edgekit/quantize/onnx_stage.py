"""The ONNX quantization stage: try arrangements, keep the fastest file that meets the accuracy
budget (latency check), and repair accuracy by moving the most sensitive layers up in precision."""
from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from ..bench import bench_file
from ..data import Data
from ..profiles import DeviceProfile
from ..validate import Reference, validate_file
from .onnx_quant import ARRANGEMENTS, QuantPlan, preprocess, quantize_onnx, scratch, to_fp16, weighted_nodes
from .sensitivity import rank_layers

REPAIR_SECONDS = 120.0
QUICK_BENCH = {"warmup": 20, "runs": 300, "batch": 1, "max_seconds": 4.0}


SAME_SPEED = 0.05  # p50s within 5% of the fastest count as equally fast (the machine's noise)
SAME_SNR_DB = 1.0  # output SNRs within 1 dB count as equally faithful
UNFAITHFUL_DB, UNFAITHFUL_HANDICAP = 10.0, 1.2  # 10 dB less faithful must be >25% faster to win
SNR_CAP_DB = 60.0  # beyond this, output noise is at float's own level: compared as equal


def choose(attempts: list[dict], float_p50: float | None, budget: float) -> tuple[dict, list[str]]:
    """The fastest attempt within the accuracy budget; among those within 5% of the fastest, the
    ones within 10 dB of the most faithful output (SNR against float), then the smallest drop, then
    the most faithful, then the smallest file. An attempt 10 dB or more below the most faithful
    passing one is timed with a 20% handicap (so with the 5% band it must be over 25% faster): a
    large fidelity loss (e.g. int16 saturation in U8S8 kernels) must buy a real speedup, not noise.
    If none is within budget, the most accurate. Pure, for tests."""
    passing = [a for a in attempts if a["drop"] <= budget]
    notes = []
    if passing:
        timed = [a for a in passing if a.get("p50_ms") is not None] or passing
        top_snr = max(_snr(a) for a in timed)

        def p50(a: dict) -> float:
            ms = a.get("p50_ms") or float("inf")
            return ms * UNFAITHFUL_HANDICAP if _snr(a) <= top_snr - UNFAITHFUL_DB else ms

        fastest = min(p50(a) for a in timed)
        near = [a for a in timed if p50(a) <= fastest * (1 + SAME_SPEED)]
        top_near = max(_snr(a) for a in near)
        near = [a for a in near if _snr(a) == top_near or _snr(a) > top_near - UNFAITHFUL_DB]
        near = [a for a in near if a["drop"] <= min(b["drop"] for b in near)]
        faithful = max(_snr(a) for a in near)
        near = [a for a in near if _snr(a) >= faithful - SAME_SNR_DB]
        best = min(near, key=lambda a: a.get("bytes", 0))
    else:
        best = min(attempts, key=lambda a: (a["drop"], -_snr(a)))
        notes.append(f"no attempt meets the accuracy budget ({budget:.4f}); kept the most accurate "
                     f"(drop {best['drop']:.4f}, gap {best['drop'] - budget:.4f})")
    if float_p50 and best.get("p50_ms") and best["p50_ms"] > float_p50:
        notes.append(f"{best['name']} is slower than its fp32 twin ({best['p50_ms']:.3f} vs {float_p50:.3f} ms p50)")
    return best, notes


def _snr(attempt: dict) -> float:
    snr = attempt.get("snr_db")
    return float("-inf") if snr is None else min(float(snr), SNR_CAP_DB)


def quantize_onnx_stage(ref: Path, folder: Path, name: str, precision: str, reference: Reference, data: Data,
                        profile: DeviceProfile, float_p50: float | None, log, fp16_io: bool = False) -> tuple[Path, dict]:
    """Write ``<name>_<precision>.onnx`` to ``folder``; returns its path and info (every attempt included)."""
    target = folder / f"{name}_{precision}.onnx"
    if precision == "fp16":
        return target, to_fp16(ref, target, keep_io_types=not fp16_io)
    budget, threads = profile.budget.max_accuracy_drop, profile.target.resolved_threads
    with scratch() as tmp:
        pre = preprocess(ref, tmp / "pre.onnx")
        layer_names = _layer_names(pre)
        attempts: list[dict] = []

        def attempt(plan: QuantPlan, label: str) -> dict:
            path = tmp / f"a{len(attempts)}.onnx"
            info = quantize_onnx(pre, path, data.calibration, plan, log)
            v = validate_file(path, reference, data, None, runtime="onnxruntime", threads=threads, raise_on_failure=False)
            p50 = bench_file(path, threads=threads, **QUICK_BENCH).p50_ms
            snr = v.outputs.get(reference.primary_output, {}).get("snr_db")
            entry = {"name": label, "plan": plan, "path": path, "drop": float(v.drop), "p50_ms": p50,
                     "snr_db": snr, "bytes": path.stat().st_size, "info": info}
            attempts.append(entry)
            return entry

        bits = 4 if precision == "int4" else 8
        calib = profile.quantize.calibration
        if bits == 8:  # latency check: every arrangement, measured
            for arrangement in ARRANGEMENTS:
                attempt(QuantPlan(8, arrangement, calib), arrangement)
        else:
            attempt(QuantPlan(4, "qdq-u8s8", calib), "int4 qdq-u8s8")
        best, notes = choose(attempts, float_p50, budget)
        if best["drop"] > budget:
            best, repair_notes = _repair(best, attempts, attempt, pre, data, budget, layer_names, tmp)
            notes += repair_notes
            best, more = choose([a for a in attempts if a["drop"] <= budget] or [best], float_p50, budget)
            notes += more
        shutil.copyfile(best["path"], target)
    info = {**best["info"], "chosen": best["name"], "notes": notes,
            "attempts": [{"name": a["name"], "drop": a["drop"], "p50_ms": a["p50_ms"], "snr_db": a["snr_db"],
                          "bytes": a["bytes"],
                          "plan": a["plan"].describe(), "float_layers": [layer_names.get(n, n) for n in a["plan"].float_nodes],
                          "int8_layers": [layer_names.get(n, n) for n in a["plan"].int8_nodes]} for a in attempts]}
    return target, info


def _repair(best: dict, attempts: list, attempt, pre: Path, data: Data, budget: float, names: dict, tmp: Path):
    """Move the most sensitive layers up one at a time (int4 -> int8 -> float) until the budget holds."""
    plan: QuantPlan = best["plan"]
    candidates = [n for n in weighted_nodes(pre) if n not in plan.float_nodes]
    ranking = rank_layers(pre, plan, data.calibration, tmp, candidates)
    notes = ["sensitivity, output SNR with only that layer quantized (worst first, dB): " +
             ", ".join(f"{names.get(n, n)} {snr:.1f}" for n, snr in ranking[:5])]
    deadline = time.perf_counter() + REPAIR_SECONDS
    steps = [("int8", n) for n, _ in ranking] if plan.bits == 4 else []
    steps += [("float", n) for n, _ in ranking]
    current = plan
    for level, node in steps:
        if time.perf_counter() > deadline:
            notes.append(f"repair stopped at its {REPAIR_SECONDS:.0f} s time box")
            break
        if level == "int8":
            current = replace(current, int8_nodes=current.int8_nodes | {node})
        else:
            current = replace(current, float_nodes=current.float_nodes | {node},
                              int8_nodes=current.int8_nodes - {node})
        entry = attempt(current, f"repair: {names.get(node, node)} -> {level}")
        if entry["drop"] <= budget:
            notes.append(f"repaired: {names.get(node, node)} moved to {level}; drop {entry['drop']:.4f}")
            return entry, notes
    best = min(attempts, key=lambda a: a["drop"])
    notes.append(f"repair could not meet the budget: best drop {best['drop']:.4f} (gap {best['drop'] - budget:.4f})")
    return best, notes


def _layer_names(path: Path) -> dict[str, str]:
    """Node name -> layer name (its weight's name without '.weight'), for readable reports."""
    import onnx

    proto = onnx.load(str(path))
    nodes = weighted_nodes(path)
    return {n.name: n.input[1].removesuffix(".weight") for n in proto.graph.node if n.name in nodes and len(n.input) > 1}
