"""Gates: the profile's budgets checked against each artifact's measured numbers."""
from __future__ import annotations

from ..core.artifact import Artifact
from ..targets.profiles import DeviceProfile
from ..core.record import Recommendation, Verdict
from ..core.results import FormatFailure, Gate


def evaluate(profile: DeviceProfile, artifacts: list[Artifact], *, failures: list[FormatFailure] = (),
             planned: dict[str, dict[str, str | None]] | None = None) -> list[Gate]:
    b, gates = profile.budget, []
    for name, precisions in (planned or {}).items():  # every planned file was made, or its fallback was
        made = {a.precision for a in artifacts if a.format == name}
        if list(precisions) == ["fp32"]:  # a format without passes (the C array) takes its file's precision
            missing = [] if made else ["fp32"]
        else:
            missing = [p for p, fallback in precisions.items() if p not in made and fallback not in made]
        note = "; ".join(f.describe()[:240] for f in failures if f.format == name)
        gates.append(Gate("formats", name, float(len(precisions) - len(missing)), float(len(precisions)), "files",
                          not missing, note))
    for a in artifacts:
        if a.validation is not None:
            drop = a.validation.drop
            gates.append(Gate("accuracy", a.file, drop, b.max_accuracy_drop, "drop", drop <= b.max_accuracy_drop,
                              measured_on=a.validation.measured_on))
        on_target = a.runtime in profile.target.runtimes
        if b.p90_latency_ms is not None and on_target and a.bench is not None:
            p90 = a.bench.p90_ms
            gates.append(Gate("p90_latency", a.file, p90, b.p90_latency_ms, "ms", p90 <= b.p90_latency_ms,
                              measured_on=a.bench.measured_on))
        if b.flash_kb is not None:
            kb = a.device_bytes / 1024
            gates.append(Gate("flash", a.file, kb, b.flash_kb, "KB", kb <= b.flash_kb))
        tflm = a.export.tflm
        if tflm is not None:
            gates.append(Gate("tflm_ops", a.file, float(tflm.loads), 1.0, "loads", tflm.loads,
                              "" if tflm.loads else tflm.error))
            if b.ram_kb is not None and tflm.arena_bytes is not None:
                kb = tflm.arena_bytes / 1024
                gates.append(Gate("ram", a.file, kb, b.ram_kb, "KB", kb <= b.ram_kb))
        if b.rss_mb is not None and on_target and a.bench is not None and a.runtime != "tflm":
            mb = a.bench.rss_growth_mb
            gates.append(Gate("rss", a.file, mb, b.rss_mb, "MB", mb <= b.rss_mb, measured_on=a.bench.measured_on))
    if b.ram_kb is not None and "tflm" in profile.target.runtimes and not any(a.runtime == "tflm" for a in artifacts):
        gates.append(Gate("ram", "(tflm arena)", None, b.ram_kb, "KB", None,
                          "not applied yet: needs a TFLite-Micro file, which this build does not produce"))
    return gates


def missed(gates: list[Gate]) -> list[Gate]:
    return [g for g in gates if g.passed is False]


def verdict(gates: list[Gate], artifacts: list[Artifact], formats: tuple[str, ...],
            recommended: tuple[Recommendation, ...], runtimes: tuple[str, ...], strict: bool = False) -> Verdict:
    """Can the model ship? Strict: every file meets every gate. Otherwise: every requested format has a file
    that meets every gate, and the target's runtimes have a recommended file when they have files at all;
    files that miss a gate stay in the bundle, marked in the table and never recommended."""
    failed = missed(gates)
    if strict:
        return Verdict(not failed, True, tuple(g.describe() for g in failed))
    bad_files = {g.file for g in failed}
    reasons = []
    for name in formats:
        files = [a for a in artifacts if a.format == name]
        if not any(a.file not in bad_files for a in files):
            why = "; ".join(g.describe() for g in failed if g.file == name or any(g.file == a.file for a in files))
            reasons.append(f"format {name}: no file meets every gate" + (f" ({why})" if why else " (no file made)"))
    on_target = [a for a in artifacts if a.runtime in runtimes and a.validation is not None]
    if on_target and not any(r.runtime in runtimes for r in recommended):
        reasons.append(f"no file is recommended for the target's runtimes ({', '.join(runtimes)})")
    despite = tuple(dict.fromkeys(g.file for g in failed))
    return Verdict(not reasons, False, tuple(reasons), despite if not reasons else ())
