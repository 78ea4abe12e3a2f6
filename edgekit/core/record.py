"""BuildRecord: the build's final product, typed to the end (Model -> Exported -> Artifact -> BuildRecord).

The record is the only thing that knows the JSON key names of ``manifest.json`` and ``report.json``
(``to_manifest()``, ``to_report()``, with their helpers in core/manifest.py). report.md, report.png, the
terminal table and ``--json`` render from it by attribute.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import Artifact
from .results import FormatFailure, Gate

if TYPE_CHECKING:
    from ..targets.profiles import DeviceProfile

SCHEMA_VERSION = 4  # 4: machine-readable preprocessing, I/O quantization, the C array's MCU facts (apps/README.md)

# What a note is about; the renderers and filters read the kind, never the text.
NOTE_KINDS = ("data", "source", "machine", "oversubscribed", "device", "quantization", "compression", "shape")


@dataclass(frozen=True)
class Note:
    kind: str
    text: str

    def __post_init__(self) -> None:
        if self.kind not in NOTE_KINDS:
            raise ValueError(f"note kind must be one of {', '.join(NOTE_KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class SourceSummary:
    """What was built: the source model's name, where it came from and its I/O."""
    name: str
    origin: str
    loader: str
    kind: str
    iospec: dict[str, Any]
    labels: tuple[str, ...] | None = None
    preprocessing: dict[str, Any] | None = None


@dataclass(frozen=True)
class DataSummary:
    """The splits the build used and whether validation had labels."""
    source: str
    task: str
    task_detected: str
    calibration: int
    validation: int
    train: int = 0
    train_kind: str | None = None
    labels: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReferenceSummary:
    """The source model's own figures on the validation split."""
    metrics: dict[str, float]
    task: str


@dataclass(frozen=True)
class Comparison:
    """One file against a baseline file over interleaved rounds (measure/compare.py)."""
    speedup: float
    verdict: str  # faster | slower | tied
    low: float | None = None
    high: float | None = None
    rounds: int | None = None
    twin: str | None = None  # the baseline, when it is the file's fp32 twin


@dataclass(frozen=True)
class FileSpeed:
    p50_by_round: tuple[float, ...]
    vs_fp32_twin: Comparison | None = None
    vs_onnx_fp32: Comparison | None = None


@dataclass(frozen=True)
class Recommendation:
    """The file to ship for one runtime, and why."""
    runtime: str
    file: str
    why: str
    slower_than_fp32: tuple[str, ...] = ()


@dataclass(frozen=True)
class FastestPick:
    """The fastest file within every budget on the target's runtimes."""
    file: str
    runtime: str
    format: str
    precision: str
    p50_ms: float
    measured_by: str
    measured_on: str
    cpu: str | None
    tied_with: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class DeviceInfo:
    """The device the build validated and timed on (--device)."""
    url: str
    python: str | None = None
    uname_m: str | None = None
    cpu: dict[str, Any] | None = None
    runtimes: dict[str, Any] | None = None


@dataclass(frozen=True)
class Verdict:
    """The build's answer to "can this model ship?".

    By default: every requested format has a file that meets every gate, and each of the target's runtimes
    that has files has a recommended one. Strict (``--strict-gates``, ``budget.strict_gates``): every file
    meets every gate. ``reasons`` says what failed; ``shipped_despite`` the files that miss a gate while the
    build still passes (kept in the bundle, never recommended)."""
    passed: bool
    strict: bool
    reasons: tuple[str, ...] = ()
    shipped_despite: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildRecord:
    bundle: Path
    source: SourceSummary
    profile: DeviceProfile
    data: DataSummary
    reference: ReferenceSummary
    artifacts: tuple[Artifact, ...]
    gates: tuple[Gate, ...]
    verdict: Verdict
    formats_requested: tuple[str, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)
    failures: tuple[FormatFailure, ...] = ()
    speed: Mapping[str, FileSpeed] = field(default_factory=dict)
    recommended: tuple[Recommendation, ...] = ()
    fastest: FastestPick | None = None
    compression: Mapping[str, Any] | None = None  # report/compression.py's summary of the pruning search
    device: DeviceInfo | None = None
    pending: tuple[str, ...] = ()
    notes: tuple[Note, ...] = ()
    build_seconds: float = 0.0
    versions: Mapping[str, str] = field(default_factory=dict)
    edgekit: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if g.passed is False]

    def recommended_for(self, runtime: str) -> Recommendation | None:
        return next((r for r in self.recommended if r.runtime == runtime), None)

    def gates_of(self, file: str) -> list[Gate]:
        return [g for g in self.gates if g.file == file]

    def artifact(self, file: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.file == file), None)

    @property
    def fp32_onnx(self) -> Artifact | None:
        """The reference graph every speedup is measured against."""
        return next((a for a in self.artifacts if a.format == "onnx" and a.precision == "fp32"), None)

    def to_manifest(self) -> dict[str, Any]:
        from .manifest import manifest

        return manifest(self)

    def to_report(self) -> dict[str, Any]:
        from .manifest import report

        return report(self)
