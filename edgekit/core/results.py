"""Typed results of the stages: what validation, the bench harness and the exporters report.

Each serialises with ``to_dict`` to the manifest/report schema (``SCHEMA_VERSION`` in pipeline/build.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .attempt import Attempt


@dataclass(frozen=True)
class ValidationResult:
    """One file run on the validation split in its runtime, compared with the reference per output."""
    file: str
    runtime: str
    metrics: dict[str, float]
    drop: float
    outputs: dict[str, dict] = field(default_factory=dict)  # per output: shape, max_abs_diff, within tolerance
    failures: tuple[str, ...] = ()
    decided_by: str = ""  # the output whose drop is the file's drop (the worst one)
    measured_on: str = "host"  # "host", or the device it ran on (ssh://user@host:port, adb:SERIAL)

    def output_snr(self, name: str) -> float | None:
        return self.outputs.get(name, {}).get("snr_db")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "runtime": self.runtime, "metrics": self.metrics, "drop": self.drop,
                "decided_by": self.decided_by, "outputs": self.outputs, "failures": list(self.failures),
                "measured_on": self.measured_on}


@dataclass(frozen=True)
class BenchResult:
    """Latency and memory of one file at batch 1, measured in a fresh process."""
    file: str
    runtime: str
    threads: int
    runs: int
    warmup: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    throughput_b1: float  # inferences per second at batch 1
    batch: int | None  # the larger batch, None when the batch axis is fixed
    throughput_batch: float | None  # items per second at that batch
    peak_rss_mb: float
    rss_growth_mb: float  # peak RSS at batch 1 minus the RSS of the process with its runtime imported
    file_bytes: int
    cpu: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    init_ms: float | None = None  # opening the file in its runtime
    first_run_ms: float | None = None  # the first inference, before the warm-up
    measured_on: str = "host"  # "host", or the device it ran on (ssh://user@host:port, adb:SERIAL)
    device: dict = field(default_factory=dict)  # on a device: uname -m, CPU, runtime and version, threads
    by_batch: tuple[dict, ...] = ()  # per request size: batch, mode (batched | sequential), p50/p90/p99, samples_per_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d["by_batch"] = list(self.by_batch)
        return d


@dataclass(frozen=True)
class TflmCheck:
    """Whether TFLite-Micro loads every op of a file, and the arena it measured."""
    loads: bool
    arena_bytes: int | None = None
    error: str = ""
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loads": self.loads}
        if self.loads:
            out.update(arena_bytes=self.arena_bytes, note=self.note)
        else:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class McuFacts:
    """What firmware needs of a C array: its symbol and headers, the ops its resolver registers, the arena."""
    symbol: str
    header: str
    ops_header: str
    ops: tuple[str, ...]
    resolver_methods: tuple[str, ...]
    unregistered_ops: tuple[str, ...]
    arena_bytes: int | None = None
    arena_bytes_with_margin: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"symbol": self.symbol, "header": self.header, "ops_header": self.ops_header,
                               "ops": list(self.ops), "resolver_methods": list(self.resolver_methods),
                               "unregistered_ops": list(self.unregistered_ops), "arena_bytes": self.arena_bytes,
                               "arena_bytes_with_margin": self.arena_bytes_with_margin}
        return out


@dataclass(frozen=True)
class ExportInfo:
    """How a file was made. ``attempts``: what its search tried (``chosen``: the label of the one shipped);
    ``details`` holds what only the report shows (plans, sensitivity, QAT) and what the manifest copies
    (runtime options, delegation, the C array's headers)."""
    exporter: str
    made_from: str | None = None  # the file it was converted or quantized from
    embeds: str | None = None  # a C array: the .tflite file it embeds
    flash_bytes: int | None = None  # what the device stores, where it differs from the file's size
    notes: tuple[str, ...] = ()
    tflm: TflmCheck | None = None
    details: dict[str, Any] = field(default_factory=dict)
    attempts: tuple[Attempt, ...] = ()
    chosen: str | None = None
    # what the manifest copies for apps: how to run the file as it was validated, and the C array's facts
    runtime_options: dict[str, str] | None = None  # OpenVINO: {"INFERENCE_PRECISION_HINT": ...}
    delegation: dict[str, Any] | None = None  # ExecuTorch: the XNNPACK delegation summary
    mcu: McuFacts | None = None  # a C array: its symbol, headers, ops and arena

    def with_details(self, **more: Any) -> "ExportInfo":
        from dataclasses import replace
        return replace(self, details={**self.details, **more})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"exporter": self.exporter, **self.details}
        if self.runtime_options is not None:
            out["runtime_options"] = dict(self.runtime_options)
        if self.delegation is not None:
            out["delegation"] = dict(self.delegation)
        if self.mcu is not None:
            out.update(self.mcu.to_dict())
        if self.made_from is not None:
            out["from"] = self.made_from
        if self.embeds is not None:
            out["embeds"] = self.embeds
        if self.flash_bytes is not None:
            out["flash_bytes"] = self.flash_bytes
        if self.notes:
            out["notes"] = list(self.notes)
        if self.tflm is not None:
            out["tflm"] = self.tflm.to_dict()
        if self.chosen is not None:
            out["chosen"] = self.chosen
        if self.attempts:
            out["attempts"] = [a.to_dict() for a in self.attempts]
        return out


@dataclass(frozen=True)
class FormatFailure:
    """A file of the plan that was not made or did not validate: the other formats still ship."""
    format: str
    precision: str  # "fp32" when the format's export itself failed (and so every precision of it)
    stage: str
    reason: str

    def describe(self) -> str:
        return f"{self.format} {self.precision}: {self.stage}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Gate:
    """One budget of the profile checked against one file's measured number (or a format's planned files)."""
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
