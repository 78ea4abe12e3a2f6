"""Gates: the profile's budgets checked against each artifact's measured numbers."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..core.artifact import Artifact
from ..targets.profiles import DeviceProfile
from ..core.results import FormatFailure


@dataclass(frozen=True)
class Gate:
    name: str  # accuracy, p90_latency, flash, rss, ram
    file: str
    value: float | None
    limit: float | None
    unit: str
    passed: bool | None  # None: not applied (with a note saying why)
    note: str = ""
    measured_on: str = ""  # where the number was measured: "host", ssh://..., adb:... ("" when not measured)

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.name == "formats":
            verdict = "passed" if self.passed else "MISSED"
            return (f"formats gate {verdict} on {self.file}: {self.value:g} of {self.limit:g} files made"
                    + (f" ({self.note})" if self.note else ""))
        if self.name == "tflm_ops" and not self.passed:
            return f"tflm_ops gate MISSED on {self.file}: {self.note}"
        if self.passed is None:
            return f"{self.name} on {self.file}: not applied ({self.note})"
        verdict = "passed" if self.passed else "MISSED"
        where = f" (measured on {self.measured_on})" if self.measured_on else ""
        return (f"{self.name} gate {verdict} on {self.file}: {self.value:.6g} {self.unit} vs limit {self.limit:.6g} "
                f"{self.unit}{where}")


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
