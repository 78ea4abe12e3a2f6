"""Which file to recommend per runtime, and the notes quantization leaves in the report."""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..core.artifact import Artifact
from ..core.record import FastestPick, FileSpeed, Recommendation
from ..targets.profiles import DeviceProfile


TIE = 0.05  # p50s this close are one speed on a shared machine (the spread of interleaved rounds): size decides


def _p50(a: Artifact, speed: Mapping[str, FileSpeed] | None) -> tuple[float, str]:
    """The median over the interleaved rounds when there are any, else the file's own p50."""
    entry = (speed or {}).get(a.file)
    rounds = entry.p50_by_round if entry is not None else ()
    if rounds:
        return sorted(rounds)[len(rounds) // 2], "median of the interleaved rounds"
    return a.bench.p50_ms, "its own p50"


def _tied_pick(files: list[Artifact], speed: Mapping[str, FileSpeed] | None) -> tuple[Artifact, list[Artifact], float]:
    """(the pick, the files within TIE of the quickest, the quickest p50): the smallest of the tied files."""
    quickest = min(_p50(a, speed)[0] for a in files)
    near = [a for a in files if _p50(a, speed)[0] <= quickest * (1 + TIE)]
    return min(near, key=lambda a: (a.bytes, _p50(a, speed)[0])), near, quickest


def _slower(a: Artifact, speed: Mapping[str, FileSpeed]) -> bool:
    entry = speed.get(a.file)
    return entry is not None and entry.vs_fp32_twin is not None and entry.vs_fp32_twin.verdict == "slower"


def recommend(artifacts: list[Artifact], budget: float, speed: Mapping[str, FileSpeed] | None = None,
              missed_gates: Iterable[str] = ()) -> tuple[Recommendation, ...]:
    """Per runtime, the fastest file within the accuracy budget that is not slower than its fp32 twin (when the
    twin itself could ship) and missed no gate (``missed_gates``: the files that did; they stay in the bundle, never recommended).
    With ``speed`` (interleaved verdicts, stages.speed_verdicts) a file is slower only when every round
    says so; within the noise it is tied and stays a candidate."""
    out = []
    missed = set(missed_gates)
    for runtime in sorted({a.runtime for a in artifacts}):
        mine = [a for a in artifacts if a.runtime == runtime and a.validation is not None]
        twin = next((a for a in mine if a.precision == "fp32"), None)
        twin_p50 = twin.bench.p50_ms if twin is not None and twin.bench is not None else None
        ok = [a for a in mine if a.validation is not None and a.validation.drop <= budget and a.file not in missed]
        if twin not in ok:  # the twin cannot ship (over budget, or it missed a gate): being slower is no reason
            flagged = []
        elif speed:
            flagged = [a.file for a in ok if _slower(a, speed)]
        else:
            flagged = [a.file for a in ok if twin_p50 and a.bench and a.bench.p50_ms > twin_p50 and a is not twin]
        fast = [a for a in ok if a.file not in flagged]
        if not fast:
            continue
        if all(a.bench is not None for a in fast):
            best, near, _ = _tied_pick(fast, speed)
            why = ("fastest file within the accuracy budget" if len(near) == 1 else
                   f"smallest of the {len(near)} files within {TIE:.0%} of the fastest, within the accuracy budget")
        else:  # TFLite-Micro is not timed on the host: the smallest file that passes
            best = min(fast, key=lambda a: a.device_bytes)
            why = "smallest file within the accuracy budget"
        out.append(Recommendation(runtime, best.file, why, tuple(flagged)))
    return tuple(out)


def quantization_notes(profile: DeviceProfile, artifacts: list[Artifact]) -> list[str]:
    notes = []
    if profile.quantize.weight_bits == 16:
        notes.append("fp16 files are a size option on CPU: the runtimes insert casts and compute in fp32")
    if any(a.precision == "int4" and a.format == "tflite" for a in artifacts):
        notes.append("4-bit TFLite is weight-only (ai-edge-quantizer: int4 weights, a DEQUANTIZE op feeds float "
                     "compute), a size option for LiteRT, not a speed one; ops it does not cover (e.g. depthwise convs) stay "
                     "float, as the precision map shows. TFLite-Micro has no int4 kernels, so the C array embeds "
                     "full-integer int8")
    for a in artifacts:
        for note in a.export.notes:
            notes.append(f"{a.file}: {note}")
        twin = next((t for t in artifacts if t.format == a.format and t.precision == "fp32"), None)
        if twin is not None and a.precision != "fp32" and a.format != "c_array" and a.bytes > twin.bytes:
            notes.append(f"{a.file} is larger than its fp32 twin {twin.file} ({a.bytes} vs {twin.bytes} bytes): "
                         "quantization adds scales and casts that outweigh the weights it shrinks on a model this small")
    return list(dict.fromkeys(notes))


def fastest_for_target(artifacts: list[Artifact], gates: list, runtimes: tuple[str, ...],
                       speed: Mapping[str, FileSpeed] | None = None) -> FastestPick | None:
    """Besides the per-runtime picks: the fastest validated file of any format whose runtime the target has and
    whose every gate passed (accuracy, p90, flash, memory), by the median of the interleaved rounds where there
    are any (the same process, the same minutes: a fair race across runtimes), else its own p50. Files within
    TIE of the quickest are tied, as in ``recommend``: the smallest of them wins."""
    failed = {g.file for g in gates if g.passed is False}
    candidates = [a for a in artifacts if a.runtime in runtimes and a.validation is not None and a.bench is not None
                  and a.file not in failed]
    if not candidates:
        return None
    best, near, quickest = _tied_pick(candidates, speed)
    ms, how = _p50(best, speed)
    cpu = best.bench.cpu or {}
    where = best.bench.measured_on or "host"
    why = f"fastest of the {len(candidates)} validated files within every budget, on the target's runtimes " \
          f"({', '.join(runtimes)})"
    if len(near) > 1:
        why = f"smallest of the {len(near)} files within {TIE:.0%} of the fastest ({quickest:.4g} ms), of the " \
              f"{len(candidates)} validated files within every budget on the target's runtimes ({', '.join(runtimes)})"
    return FastestPick(best.file, best.runtime, best.format, best.precision, round(ms, 6), how, where,
                       cpu.get("model") if isinstance(cpu, dict) else str(cpu),
                       tuple(sorted(a.file for a in near if a is not best)), why)
