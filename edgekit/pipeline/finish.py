"""The build's last stage: gates, recommendations, the verdict and typed notes, assembled into a BuildRecord."""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..core.artifact import Artifact
from ..core.data import Data
from ..core.model import Model
from ..core.record import (BuildRecord, DataSummary, DeviceInfo, FileSpeed, Note, ReferenceSummary,
                           SourceSummary)
from ..core.results import FormatFailure
from ..core.versions import tool_versions
from ..measure.gates import evaluate, missed, verdict
from ..measure.recommend import fastest_for_target, quantization_notes, recommend
from ..measure.validate import Reference
from ..report.compression import compression_report
from ..targets.profiles import DeviceProfile
from .plan import BuildPlan, planned_files
from .stages import pending_settings

if TYPE_CHECKING:
    from ..device.session import Device
    from .options import BuildOptions

TRANSFER_SHARE = 0.4  # of the samples after calibration, set aside for distillation when no train split is given
USED = ("torch", "torch-pruning", "onnx", "onnxscript", "onnxruntime", "scikit-learn", "tensorflow", "tf-keras", "onnx2tf",
        "ai-edge-litert", "ai-edge-quantizer", "tflite-micro", "matplotlib")


def make_record(source: Model, prof: DeviceProfile, opts: BuildOptions, plan: BuildPlan, dataset: Data,
                reference: Reference, artifacts: list[Artifact], failures: list[FormatFailure],
                speed: Mapping[str, FileSpeed], compression, skipped_compression: str | None, device,
                final: Path, folder: Path, started: float) -> BuildRecord:
    """Gate every file, recommend per runtime and for the target, decide the verdict, and collect the notes."""
    wanted = tuple(opts.formats or prof.target.formats)
    gates = evaluate(prof, artifacts, failures=failures, planned=planned_files(plan))
    recommended = recommend(artifacts, prof.budget.max_accuracy_drop, speed, {g.file for g in missed(gates)})
    formats = tuple(s.format.name for s in plan.steps)
    return BuildRecord(
        bundle=final, source=source_summary(source), profile=prof, data=data_summary(dataset),
        reference=ReferenceSummary(reference.metrics, reference.task), artifacts=tuple(artifacts),
        gates=tuple(gates),
        verdict=verdict(gates, artifacts, formats, recommended, prof.target.runtimes, opts.strict(prof)),
        formats_requested=wanted, overrides=opts.overrides, failures=tuple(failures), speed=dict(speed),
        recommended=recommended, fastest=fastest_for_target(artifacts, gates, prof.target.runtimes, speed),
        compression=compression_report(compression, artifacts, folder) if compression is not None else None,
        device=device_info(device), pending=tuple(plan.skipped) + tuple(pending_settings(prof, wanted)),
        notes=notes(prof, dataset, artifacts, device, skipped_compression, opts.static_shape),
        build_seconds=round(time.perf_counter() - started, 2), versions=tool_versions(USED), edgekit=__version__)


def source_summary(source: Model) -> SourceSummary:
    labels = source.meta.get("labels")
    return SourceSummary(source.name, source.origin, source.loader, source.kind, source.iospec.to_dict(),
                         tuple(labels) if labels is not None else None, source.meta.get("preprocessing"))


def data_summary(dataset: Data) -> DataSummary:
    s = dataset.summary()
    return DataSummary(s["source"], s["task"], s["task_detected"], s["calibration"], s["validation"], s["train"],
                       s["train_kind"], s["labels"], tuple(s["notes"]))


def device_info(device: Device | None) -> DeviceInfo | None:
    if device is None:
        return None
    info: dict[str, Any] = device.info
    return DeviceInfo(device.where, info.get("python"), info.get("uname_m"), info.get("cpu"), info.get("runtimes"))


def notes(prof: DeviceProfile, dataset: Data, artifacts: list[Artifact], device, skipped_compression: str | None,
          static_shape: dict[str, int] | None) -> tuple[Note, ...]:
    """The report's notes, each with its kind, in the order a reader meets them; no text twice."""
    out = [Note("data", n) for n in dataset.notes] + machine_notes(prof)
    if device is not None:
        out.append(Note("device", device_note(device, artifacts)))
        if all(a.bench is None or a.bench.measured_on == device.where for a in artifacts):
            out = [n for n in out if n.kind != "oversubscribed"]  # every file was timed on the device
    out += [Note("quantization", n) for n in quantization_notes(prof, artifacts)]
    if skipped_compression:
        out.append(Note("compression", skipped_compression))
    if static_shape:
        out.append(Note("shape", "--static-shape " + ", ".join(f"{k}={v}" for k, v in static_shape.items())
                        + ": the samples were cut to that size; every file is validated there"))
    first: dict[str, Note] = {}  # one note per text, the first, in order
    for n in out:
        first.setdefault(n.text, n)
    return tuple(first.values())


def device_note(device, artifacts: list[Artifact]) -> str:
    there = [a.file for a in artifacts if a.bench is not None and a.bench.measured_on == device.where]
    host = [a.file for a in artifacts if a.file not in there]
    return (f"measured on {device.where} ({device.info.get('uname_m')}, {device.info.get('cpu', {}).get('model')}): "
            f"{', '.join(there) or 'no file'}; on this host: {', '.join(host) or 'no file'}")


def machine_notes(prof: DeviceProfile) -> list[Note]:
    cores = os.cpu_count() or 1
    if prof.target.resolved_threads > cores:
        return [Note("oversubscribed", f"the profile asks for {prof.target.resolved_threads} threads but this machine "
                     f"has {cores} cores: latency here is oversubscribed; measure on the device for firm numbers")]
    return []
