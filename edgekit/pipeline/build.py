"""build(): make the plan, run the stages in its order, gate, and write the bundle.

No format or algorithm code lives here: formats come from the plan (plan.py, from the format table),
exporters and quantization passes from their registries.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..core.artifact import Artifact
from ..files.bundle import check_target, check_writable, staging, write_json
from ..core.data import Data
from ..device import open_device
from ..core.errors import EdgekitError, StageError
from ..export import Exported, ExportJob, PassContext, exporter_for
from ..export.tf_client import TfWorker
from ..measure.gates import Gate, evaluate, missed
from ..core.results import FormatFailure
from ..core.model import Model
from .plan import QUANTIZERS, BuildPlan, make_plan, planned_files
from ..targets.profiles import DeviceProfile, load_profile, with_overrides
from ..report.compression import compression_report, manifest_entry
from ..quantize.onnx_ort import check_calibration
from ..measure.recommend import fastest_for_target, quantization_notes, recommend
from ..report.markdown import write_reports
from ..prune.search import compress
from .stages import (check_compressible, load_data, load_source, measure, pending_settings, speed_verdicts,
                     stage)
from ..measure.validate import Reference, reference_outputs
from ..core.versions import tool_versions

SCHEMA_VERSION = 4  # 4: machine-readable preprocessing, I/O quantization, the C array's MCU facts (apps/README.md)
TRANSFER_SHARE = 0.4  # of the samples after calibration, set aside for distillation when no train split is given
USED = ("torch", "torch-pruning", "onnx", "onnxscript", "onnxruntime", "scikit-learn", "tensorflow", "tf-keras", "onnx2tf",
        "ai-edge-litert", "ai-edge-quantizer", "tflite-micro", "matplotlib")


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
          keep: tuple[str, ...] | None = None, output_tasks: dict[str, str] | None = None,
          dynamic: dict | None = None, static_shape: dict[str, int] | None = None,
          progress: Callable[[str], None] | None = None, device: str | None = None,
          accept_host_key: bool = False, labels=None, preprocessing=None) -> BuildResult:
    """Build, validate, measure and gate a bundle for ``model`` on ``profile``.

    ``model`` is a source string (see ``load_model``), a ``Model``, or None for the built-in example.
    ``output_tasks``: output name -> what it is judged by ('distribution', 'probability:0.6',
    'regression'); ``dynamic``: {input: {axis: name}} axes that stay dynamic in the ONNX file;
    ``static_shape``: {axis name: size} the size TFLite and the C array are fixed to (the data is cut to it).
    ``device``: validate and bench every file the device runs there (ssh://user@host[:port], adb:SERIAL;
    default: the profile's ``target.device``); the gates then use the device's numbers.
    ``labels`` (a list, or a file: JSON list or one per line) and ``preprocessing`` (a recipe dict or a JSON
    file, apps/README.md) go into the manifest for apps, replacing what the source declares.
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
    started = time.perf_counter()
    out = Path(out)
    check_writable(out)
    with stage("load", log, progress):
        source, arrays, data_source = load_source(model, weights, data, trust_pickle, dynamic)
        source = with_app_meta(source, labels, preprocessing)
    factory = source.meta.get("factory")
    final = out / f"{source.name}-{factory + '-' if factory else ''}{prof.name}"
    check_target(final, force)
    device_url = device or prof.target.device
    with contextlib.ExitStack() as held:
        dev = held.enter_context(open_device(device_url, accept_host_key=accept_host_key)) if device_url else None
        return _build(source, arrays, data_source, prof, final, out, wanted, formats, pruning, overrides, log, started,
                      progress, dev, task=task, calib_samples=calib_samples, val_samples=val_samples, force=force,
                      output_tasks=output_tasks, static_shape=static_shape, int8_io=int8_io, fp16_io=fp16_io)


def with_app_meta(source, labels, preprocessing):
    """The source with the user's labels and recipe, checked against its inputs and first output."""
    from ..core.recipe import check_labels, check_recipe, load_labels, load_recipe

    meta = dict(source.meta)
    if labels is not None:
        meta["labels"] = load_labels(labels) if isinstance(labels, (str, Path)) else [str(x) for x in labels]
        check_labels(meta["labels"], source.iospec, "--labels")
    if preprocessing is not None:
        meta["preprocessing"] = (load_recipe(preprocessing, source.iospec) if isinstance(preprocessing, (str, Path))
                                 else check_recipe(preprocessing, source.iospec, "preprocessing"))
    return replace(source, meta=meta) if meta != source.meta else source


def _build(source, arrays, data_source, prof, final, out, wanted, formats, pruning, overrides, log, started, progress,
           device, *, task, calib_samples, val_samples, force, output_tasks, static_shape, int8_io, fp16_io
           ) -> BuildResult:
    skipped_compression = check_compressible(source, prof, explicit=bool(pruning))
    plan = make_plan(source, prof, wanted, explicit=bool(formats))
    with stage("data", log, progress):
        distils = prof.prune.active and skipped_compression is None and prof.recover.epochs > 0
        dataset = load_data(source, arrays, data_source, task, calib_samples, val_samples,
                            transfer=TRANSFER_SHARE if distils else 0.0, static=static_shape)
    if any(s.precisions for s in plan.steps):
        check_calibration(dataset.calibration)  # its small-sample warning is already among the data's notes
    with stage("reference", log, progress):
        reference = reference_outputs(source, dataset, prof.target.resolved_threads,
                                      {**prof.outputs, **dict(output_tasks or {})})
    compression = None
    try:
        with staging(final, force) as folder, tempfile.TemporaryDirectory(prefix="edgekit-") as scratch, \
                TfWorker(log) as tf:
            if needs_converter(plan, source):
                tf.prestart()  # its TensorFlow imports overlap pruning and the ONNX export
            teacher = source.module
            if prof.prune.active and skipped_compression is None:
                with stage("compress", log, progress):
                    compression = compress(source, dataset, reference, prof, Path(scratch), log=log, progress=progress)
                source, reference = compression.model, compression.reference
            artifacts, failures = run_plan(plan, source, reference, dataset, prof, folder, Path(scratch), tf, log,
                                           progress, {"int8_io": int8_io, "fp16_io": fp16_io}, device, teacher)
            with stage("compare speed", log, progress):
                speed = speed_verdicts(artifacts, folder, dataset, prof)
            gates = evaluate(prof, artifacts, failures=failures, planned=planned_files(plan))
            report = _report(source, prof, dataset, reference, artifacts, gates, final, wanted, overrides, started)
            report["pending"] = list(plan.skipped) + report["pending"]
            if device is not None:
                report["device"] = {"url": device.where, "python": device.info.get("python"),
                                    "uname_m": device.info.get("uname_m"), "cpu": device.info.get("cpu"),
                                    "runtimes": device.info.get("runtimes")}
                report["notes"].append(device_note(device, artifacts))
                if all(a.bench is None or a.bench.measured_on == device.where for a in artifacts):
                    report["notes"] = [n for n in report["notes"] if "latency here is oversubscribed" not in n]
            report["notes"] += quantization_notes(prof, artifacts)
            report["failed"] = [f.to_dict() for f in failures]
            report["speed"] = speed
            report["recommended"] = recommend(artifacts, prof.budget.max_accuracy_drop, speed)
            report["fastest"] = fastest_for_target(artifacts, gates, prof.target.runtimes, speed)
            report["notes"] += [skipped_compression] if skipped_compression else []
            if static_shape:
                report["notes"].append("--static-shape " + ", ".join(f"{k}={v}" for k, v in static_shape.items())
                                       + ": the samples were cut to that size; every file is validated there")
            report["notes"] = list(dict.fromkeys(report["notes"]))
            if compression is not None:
                report["compression"] = compression_report(compression, artifacts, folder)
            with stage("bundle", log, progress):
                write_json(folder / "manifest.json", _manifest(source, prof, artifacts, gates, report))
                write_reports(folder, report)
                (folder / "build.log").write_text(log.getvalue())
        (out / f"{final.name}.failed.log").unlink(missing_ok=True)  # an earlier failure's log is stale now
    except EdgekitError:
        failed_log = out / f"{final.name}.failed.log"
        out.mkdir(parents=True, exist_ok=True)
        failed_log.write_text(log.getvalue())
        raise
    return BuildResult(final, artifacts, gates, report)


def run_plan(plan: BuildPlan, source: Model, reference: Reference, data: Data, prof: DeviceProfile, folder: Path,
             scratch: Path, tf: TfWorker, log: io.StringIO, progress, options: dict, device=None, teacher=None
             ) -> tuple[list[Artifact], list[FormatFailure]]:
    """Each step: export the format's fp32 file, then its quantization passes (and a pass's fallback
    when its file fails or misses the accuracy budget); every file is validated and measured as it is
    made. A file that fails (its stage, or its validation) is removed and listed: the others still ship."""
    produced: list[Exported] = []
    artifacts: list[Artifact] = []
    failures: list[FormatFailure] = []
    missed_budget: set[str] = set()
    budget = prof.budget.max_accuracy_drop

    def attempt(name: str, precision: str, title: str, make: Callable[[], list[Exported]]) -> list[Artifact] | None:
        before = set(folder.iterdir())
        try:
            with stage(title, log, progress):
                if tf is not None and not title.startswith("export "):
                    tf.settle()  # quantization passes time their candidates: not beside the worker's imports
                made = make()
            if tf is not None:
                tf.settle()  # nothing is validated or timed while the converter worker is still importing
            measured = []
            for entry in made:
                with stage(f"validate+bench {entry.path.name}", log, progress):
                    measured.append((entry, measure(entry, reference, data, prof, source, device)))
        except StageError as exc:
            for path in set(folder.iterdir()) - before:  # nothing half-made stays in the bundle
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            failures.append(FormatFailure(name, precision, exc.stage, str(exc).split(": ", 1)[-1]))
            log.write(f"format {name} {precision} failed and is left out: {exc}\n")
            return None
        for entry, artifact in measured:
            produced.append(entry)
            artifacts.append(artifact)
        return [a for _, a in measured]

    for step in plan.steps:
        name = step.format.name
        needs = step.format.embeds or (step.format.converted_from if source.kind != "keras" else "")
        source_file = next((e.path for e in produced if e.format == step.format.converted_from
                            and e.precision == "fp32"), None)
        if needs and not any(e.format == needs for e in produced):
            failures.append(FormatFailure(name, "fp32", f"export {name}", f"not made: it is made from the {needs} "
                                          f"files, and none was made"))
            continue
        job = ExportJob(source, folder, scratch, log, tf, reference_onnx=source_file, calibration=data.calibration,
                        produced=tuple(produced), missed_budget=frozenset(missed_budget),
                        min_delegated_share=prof.target.min_delegated_share)
        exporter = exporter_for(name, source.kind)
        measured = attempt(name, "fp32", f"export {name}", lambda: exporter(job))
        if measured is None:
            continue
        base = next(e for e in produced if e.path.name == measured[0].file)  # the fp32 file the passes start from
        twin = measured[0]
        for precision in step.precisions:
            ctx = PassContext(folder, scratch, source.name, source.iospec, log, tf, data, reference, prof,
                              twin.bench.p50_ms if twin.bench else None, options, model=source,
                              teacher=teacher if teacher is not None else source.module)
            made = attempt(name, precision, f"quantize {name} {precision}",
                           lambda: [QUANTIZERS[(name, precision)](base, ctx)])
            fallback = step.fallback.get(precision)
            if not fallback:
                continue
            if made is None:
                why = f"{precision} failed ({failures[-1].reason[:160]})"
            elif made[0].drop is not None and made[0].drop > budget:
                why = f"{made[0].file} missed the accuracy budget (drop {made[0].drop:.4f})"
                missed_budget.add(made[0].file)  # a container (the C array) embeds the fallback instead
            else:
                continue
            attempt(name, fallback, f"quantize {name} {fallback}",
                    lambda: [_with_why(QUANTIZERS[(name, fallback)](base, ctx), why)])
    if not artifacts and failures:
        first = failures[0]
        raise StageError(first.stage, first.reason)
    return artifacts, failures


def needs_converter(plan: BuildPlan, source: Model) -> bool:
    """Whether the build calls the TensorFlow worker: a Keras source, or a format that needs TensorFlow."""
    return source.kind == "keras" or any("tensorflow" in s.format.requires for s in plan.steps)


def _with_why(entry: Exported, why: str) -> Exported:
    return replace(entry, info=entry.info.with_details(why=why))


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


def device_note(device, artifacts: list[Artifact]) -> str:
    there = [a.file for a in artifacts if a.bench is not None and a.bench.measured_on == device.where]
    host = [a.file for a in artifacts if a.file not in there]
    return (f"measured on {device.where} ({device.info.get('uname_m')}, {device.info.get('cpu', {}).get('model')}): "
            f"{', '.join(there) or 'no file'}; on this host: {', '.join(host) or 'no file'}")


def _machine_notes(prof: DeviceProfile) -> list[str]:
    cores = os.cpu_count() or 1
    if prof.target.resolved_threads > cores:
        return [f"the profile asks for {prof.target.resolved_threads} threads but this machine has {cores} cores: "
                "latency here is oversubscribed; measure on the device for firm numbers"]
    return []


def _output_figures(a: Artifact) -> dict | None:
    """Per output: its task and the figures it was judged by (every output is gated, the worst decides)."""
    if a.validation is None:
        return None
    keys = ("task", "drop", "cosine", "snr_db", "mae", "max_abs_diff_source", "top1_agreement", "threshold",
            "threshold_agreement", "above_threshold", "above_threshold_reference")
    return {name: {k: o[k] for k in keys if k in o} for name, o in a.validation.outputs.items()}


MCU_KEYS = ("symbol", "header", "ops_header", "ops", "resolver_methods", "unregistered_ops", "arena_bytes",
            "arena_bytes_with_margin")


def _mcu_entry(a: Artifact) -> dict:
    """What firmware needs of a C array: its headers, symbol, op list and the measured TFLite-Micro arena."""
    if a.format != "c_array":
        return {}
    entry = {"embeds": a.export.embeds, **{k: a.export.details[k] for k in MCU_KEYS if k in a.export.details}}
    if a.export.tflm is not None and a.export.tflm.loads:
        entry["arena_bytes_measured"] = a.export.tflm.arena_bytes  # measured again in the measure stage
    return {"mcu": entry}


def _runtime_entry(a: Artifact) -> dict:
    """What an app must set or know to run the file as it was validated: OpenVINO's precision hint and its
    weights file, ExecuTorch's delegation."""
    details, out = a.export.details or {}, {}
    if a.format == "openvino":
        out["weights_file"] = str(Path(a.file).with_suffix(".bin"))
    if details.get("runtime_options"):
        out["runtime_options"] = dict(details["runtime_options"])
    if details.get("delegation"):
        out["delegation"] = dict(details["delegation"])
    return out


def _manifest(source, prof: DeviceProfile, artifacts: list[Artifact], gates, report) -> dict:
    def latency(a: Artifact) -> dict:
        b = a.bench.to_dict() if a.bench else {}
        keys = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "threads", "runs", "cpu", "init_ms", "first_run_ms",
                "measured_on", "device")
        entry = {k: b.get(k) for k in keys}
        if b.get("by_batch"):  # throughput by request size (bench.batches; the server profile sets it)
            entry["by_batch"] = b["by_batch"]
        return entry

    return {
        "schema_version": SCHEMA_VERSION,
        "model": source.name,
        "labels": source.meta.get("labels"),
        "preprocessing": source.meta.get("preprocessing"),
        "files": [{"file": a.file, "format": a.format, "runtime": a.runtime, "precision": a.precision,
                   "sha256": a.sha256, "bytes": a.bytes, "iospec": a.iospec, "precision_map": a.precision_map,
                   "metrics": a.validation.metrics if a.validation else None, "metric_drop": a.drop,
                   "outputs": _output_figures(a), "drop_decided_by": a.validation.decided_by if a.validation else None,
                   "validated_on": a.validation.measured_on if a.validation else None,
                   "latency": latency(a), **_mcu_entry(a), **_runtime_entry(a)} for a in artifacts],
        "profile": prof.to_dict(),
        "gates": [g.to_dict() for g in gates],
        "recommended": report["recommended"],
        "fastest": report["fastest"],
        "failed": report["failed"],
        "compression": manifest_entry(report.get("compression")),
        "passed": report["passed"],
        "pending": report["pending"],
        "versions": tool_versions(USED),
    }
