"""build(): plan, run the stages in order, gate, and write the bundle. No format or algorithm code."""
from __future__ import annotations

import io
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .artifact import Artifact
from .bundle import check_target, staging, write_json
from .errors import EdgekitError, UsageError
from .export import EXPORTERS, Exported, ExportJob
from .quantize import BITS_PRECISIONS
from .quantize.onnx_quant import check_calibration
from .quantize.onnx_stage import quantize_onnx_stage
from .quantize.plan import export_precisions, quantization_notes, recommend
from .quantize.tflite_stage import int16_fallback, tflite_int4_stage
from .formats import get_format
from .gates import Gate, evaluate, missed
from .profiles import DeviceProfile, load_profile, with_overrides
from .report import write_reports
from .prune import compress
from .prune.summary import compression_report, manifest_entry
from .stages import (check_compressible, export_format, load_data, load_source, measure, pending_settings,
                     stage)
from .validate import reference_outputs
from .versions import tool_versions

SCHEMA_VERSION = 1
USED = ("torch", "torch-pruning", "onnx", "onnxscript", "onnxruntime", "scikit-learn", "tensorflow", "tf-keras", "onnx2tf",
        "ai-edge-litert", "tflite-micro")


@dataclass(frozen=True)
class BuildResult:
    bundle: Path
    artifacts: list[Artifact]
    gates: list[Gate]
    report: dict[str, Any] = field(repr=False)

    @property
    def passed(self) -> bool:
        return not missed(self.gates)

    @property
    def failed_gates(self) -> list[Gate]:
        return missed(self.gates)


def build(model=None, *, profile: str | Path | DeviceProfile = "iot", weights=None, data=None, out="out",
          force: bool = False, task: str | None = None, formats: tuple[str, ...] | None = None,
          trust_pickle: bool = False, calib_samples: int | None = None, val_samples: int | None = None,
          threads: int | None = None, bits: int | None = None, calibration: str | None = None,
          int8_io: bool = False, fp16_io: bool = False, prune_ratio: float | None = None,
          prune_method: str | None = None, lowrank: float | None = None, share_bits: int | None = None,
          keep: tuple[str, ...] | None = None, progress: Callable[[str], None] | None = None) -> BuildResult:
    """Build, validate, measure and gate a bundle for ``model`` on ``profile``.

    ``model`` is a source string (see ``load_model``), a ``Model``, or None for the built-in example.
    Returns a BuildResult; check ``result.passed`` (the CLI exits 1 when it is False).
    """
    log = io.StringIO()
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    pruning = {key: value for key, value in (("prune.max_ratio", prune_ratio), ("prune.method", prune_method),
                                             ("prune.lowrank", lowrank), ("prune.share_bits", share_bits),
                                             ("prune.keep", tuple(keep) if keep else None)) if value is not None}
    overrides = {key: value for key, value in (("target.threads", threads), ("quantize.weight_bits", bits),
                                                ("quantize.calibration", calibration)) if value is not None} | pruning
    prof = with_overrides(prof, overrides) if overrides else prof
    wanted = tuple(formats) if formats else prof.target.formats
    for name in wanted:
        get_format(name)
    if formats and any(n not in EXPORTERS for n in formats):
        raise UsageError(f"--formats: no exporter for {', '.join(n for n in formats if n not in EXPORTERS)} yet")
    started = time.perf_counter()
    out = Path(out)
    with stage("load", log, progress):
        source, arrays, data_source = load_source(model, weights, data, trust_pickle)
    final = out / f"{source.name}-{prof.name}"
    check_target(final, force)
    skipped_compression = check_compressible(source, prof, explicit=bool(pruning))
    with stage("data", log, progress):
        dataset = load_data(source, arrays, data_source, task, calib_samples, val_samples)
    runnable, skipped = plan_formats(source, wanted)
    with stage("reference", log, progress):
        reference = reference_outputs(source, dataset, prof.target.resolved_threads)
    compression = None
    try:
        with staging(final, force) as folder, tempfile.TemporaryDirectory(prefix="edgekit-") as scratch:
            if prof.prune.active and skipped_compression is None:
                with stage("compress", log, progress):
                    compression = compress(source, dataset, reference, prof, Path(scratch), log=log, progress=progress)
                source, reference = compression.model, compression.reference
            artifacts, produced = [], []
            quant_notes = check_calibration(dataset.calibration) if prof.quantize.weight_bits < 32 else []
            for name in runnable:
                job = ExportJob(source, folder, log, precisions=export_precisions(name, prof),
                                reference_onnx=next((e.path for e in produced if e.format == "onnx"), None),
                                calibration=dataset.calibration, produced=tuple(produced), int8_io=int8_io)
                with stage(f"export {name}", log, progress):
                    exported = export_format(name, job)
                produced += exported
                for entry in exported:
                    with stage(f"validate+bench {entry.path.name}", log, progress):
                        artifacts.append(measure(entry, reference, dataset, prof))
                if name == "tflite":
                    with stage("quantize tflite int16x8", log, progress):
                        extra = int16_fallback(job, artifacts, produced, prof)
                    if prof.quantize.weight_bits == 4:
                        with stage("quantize tflite int4", log, progress):
                            extra.append(tflite_int4_stage(job, produced, reference, dataset, prof))
                    for entry in extra:
                        with stage(f"validate+bench {entry.path.name}", log, progress):
                            artifacts.append(measure(entry, reference, dataset, prof))
                if name == "onnx":
                    for precision in BITS_PRECISIONS[prof.quantize.weight_bits]["onnx"]:
                        twin = artifacts[-1]
                        with stage(f"quantize onnx {precision}", log, progress):
                            path, info = quantize_onnx_stage(exported[0].path, folder, source.name, precision,
                                                             reference, dataset, prof, twin.bench.get("p50_ms"), log,
                                                             fp16_io=fp16_io)
                        entry = Exported(path, "onnx", precision, info)
                        produced.append(entry)
                        with stage(f"validate+bench {path.name}", log, progress):
                            artifacts.append(measure(entry, reference, dataset, prof))
            gates = evaluate(prof, artifacts)
            report = _report(source, prof, dataset, reference, artifacts, gates, final, wanted, overrides, started)
            report["pending"] = skipped + report["pending"]
            report["notes"] += quant_notes + quantization_notes(prof, artifacts)
            report["recommended"] = recommend(artifacts, prof.budget.max_accuracy_drop)
            report["notes"] += [skipped_compression] if skipped_compression else []
            if compression is not None:
                report["compression"] = compression_report(compression, artifacts, folder)
            with stage("bundle", log, progress):
                write_json(folder / "manifest.json", _manifest(source, prof, artifacts, gates, report))
                write_reports(folder, report)
                (folder / "build.log").write_text(log.getvalue())
    except EdgekitError:
        failed_log = out / f"{final.name}.failed.log"
        out.mkdir(parents=True, exist_ok=True)
        failed_log.write_text(log.getvalue())
        raise
    return BuildResult(final, artifacts, gates, report)


def plan_formats(source, wanted: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """The formats to run, in exporter order, and what cannot run for this source (said, not skipped)."""
    skipped = []
    names = set(wanted)
    if source.kind == "keras":
        import importlib.util
        if "onnx" in names and importlib.util.find_spec("tf2onnx") is None:
            skipped.append("ONNX: not available for Keras sources here: tf2onnx is not installed (pip install tf2onnx)")
            names.discard("onnx")
        names.add("tflite")  # Keras goes to TFLite directly, not through ONNX
    else:
        names.add("onnx")  # the reference graph every other format is converted from
    return tuple(n for n in EXPORTERS if n in names), skipped


def _report(source, prof: DeviceProfile, dataset, reference, artifacts, gates, final, wanted, overrides, started) -> dict:
    return {
        "schema_version": SCHEMA_VERSION, "edgekit": __version__, "bundle": str(final),
        "model": {"name": source.name, "origin": source.origin, "loader": source.loader, "kind": source.kind,
                  "iospec": source.iospec.to_dict()},
        "profile": prof.to_dict(), "overrides": overrides, "formats_requested": list(wanted),
        "data": dataset.summary(), "reference": {"metrics": reference.metrics, "task": reference.task},
        "artifacts": [a.to_dict() for a in artifacts], "gates": [g.to_dict() for g in gates],
        "passed": not missed(gates), "pending": pending_settings(prof, wanted),
        "notes": list(dataset.notes) + _machine_notes(prof), "build_seconds": round(time.perf_counter() - started, 2),
    }


def _machine_notes(prof: DeviceProfile) -> list[str]:
    cores = os.cpu_count() or 1
    if prof.target.resolved_threads > cores:
        return [f"the profile asks for {prof.target.resolved_threads} threads but this machine has {cores} cores: "
                "latency here is oversubscribed; measure on the device for firm numbers"]
    return []


def _manifest(source, prof: DeviceProfile, artifacts, gates, report) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "model": source.name,
        "labels": source.meta.get("labels"),
        "preprocessing": source.meta.get("preprocessing"),
        "files": [{"file": a.file, "format": a.format, "runtime": a.runtime, "precision": a.precision,
                   "sha256": a.sha256, "bytes": a.bytes, "iospec": a.iospec, "precision_map": a.precision_map,
                   "metrics": a.validation.get("metrics"), "metric_drop": a.validation.get("drop"),
                   "latency": {k: a.bench.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                                                           "threads", "runs")} | {"cpu": a.bench.get("cpu")}}
                  for a in artifacts],
        "profile": prof.to_dict(),
        "gates": [g.to_dict() for g in gates],
        "recommended": report["recommended"],
        "compression": manifest_entry(report.get("compression")),
        "passed": report["passed"],
        "pending": report["pending"],
        "versions": tool_versions(USED),
    }
