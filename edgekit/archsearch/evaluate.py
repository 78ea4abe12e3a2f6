"""Score one candidate the way ``edgekit build`` would: its files are exported, quantized, validated in
their runtimes and benched by the build's own ``run_plan``; nothing here exports or times anything itself.

The plan of a trial is the build's plan cut to what the score needs: the scored format (TFLite when the
profile makes it, else ONNX) at the first precision the profile's bits make there (a 4-bit profile's
full-integer int8 TFLite file, which the C array embeds), the C array when the profile targets
TFLite-Micro (for the arena), and the fp32 files they are made from. No fallback passes run.
"""
from __future__ import annotations

import io
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..measure.bench import cpu_info
from ..core.errors import StageError
from ..export.onnx import export_onnx
from ..targets.formats import get_format
from ..pipeline.plan import make_plan
from ..pipeline.build import run_plan
from ..targets.profiles import DeviceProfile
from ..sources.load import torch_model
from ..pipeline.stages import load_data
from ..measure.validate import reference_outputs

PRIMARY = {"classification": "top1", "regression": "r2"}


@dataclass(frozen=True)
class Measured:
    """The figures of one candidate's scored file, every one measured."""
    file: str
    format: str
    precision: str
    runtime: str
    metric: float  # the task metric of the scored file in its runtime
    metric_fp32: float  # the same metric of the candidate itself (torch, fp32)
    drop: float  # metric_fp32 - metric: what quantization cost
    p50_ms: float
    p90_ms: float
    p99_ms: float
    bytes: int  # what the device stores
    arena_bytes: int | None  # TFLite-Micro's arena, when the profile targets it
    tflm_loads: bool | None
    params: int
    seconds: float
    cpu: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def attrs(self) -> dict:
        return {"file": self.file, "format": self.format, "precision": self.precision, "runtime": self.runtime,
                "metric": self.metric, "metric_fp32": self.metric_fp32, "drop": self.drop, "p50_ms": self.p50_ms,
                "p90_ms": self.p90_ms, "p99_ms": self.p99_ms, "bytes": self.bytes, "arena_bytes": self.arena_bytes,
                "tflm_loads": self.tflm_loads, "params": self.params, "measure_seconds": self.seconds,
                "cpu": self.cpu}


def scored_format(profile: DeviceProfile) -> tuple[str, str]:
    """(format, precision) a trial is scored by."""
    name = "tflite" if "tflite" in profile.target.formats else "onnx"
    made = get_format(name).precisions_for(profile.quantize.weight_bits)
    return name, (made[0] if made else "fp32")


def trial_formats(profile: DeviceProfile) -> tuple[str, ...]:
    name, _ = scored_format(profile)
    tflm = name == "tflite" and "tflm" in profile.target.runtimes and "c_array" in profile.target.formats
    return (name, "c_array") if tflm else (name,)


SCORE_SECONDS = 1.0  # a scored measurement times at least this long: 200 runs of a 25 us net are 5 ms of samples


class Evaluator:
    """Measures candidates through the build pipeline with one TensorFlow worker for the whole search.
    A scored measurement (no ``val_samples``: a trained trial, a promoted member) pools at least
    ``SCORE_SECONDS`` of runs, so that the p90 of a net of tens of microseconds is not a few milliseconds of
    samples; the untrained pre-check times the profile's runs."""

    def __init__(self, profile: DeviceProfile, scratch: Path, tf, log: io.StringIO, meta: dict | None = None,
                 stages=None):
        # a trial scores its PTQ file: QAT would spend the trial's seconds on one candidate (the promoted
        # winner's full build runs it when the profile asks)
        profile = replace(profile, qat=replace(profile.qat, mode="off"))
        self.profile, self.scratch, self.tf, self.log, self.stages = profile, Path(scratch), tf, log, stages
        self.meta = meta or {}
        self.format, self.precision = scored_format(profile)
        self.formats = trial_formats(profile)

    def measure(self, module, arrays: dict, name: str, *, val_samples: int | None = None) -> Measured:
        start = time.perf_counter()
        prof = self.profile
        if val_samples is None and prof.bench.min_seconds < SCORE_SECONDS:
            prof = replace(prof, bench=replace(prof.bench, min_seconds=SCORE_SECONDS))
        held_out = {k: v for k, v in arrays.items() if not k.endswith("_train")}
        model = torch_model(module, name=name, loader="nas", origin=f"nas candidate {name}", sample_inputs=held_out,
                            meta=self.meta)
        work = self.scratch / f"{name}.work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        screened = work / f"{name}.screen.onnx"  # measured, not shipped: the fast TorchScript exporter first
        how = export_onnx(model, screened, self.log, screening=True)
        model = replace(model, onnx_path=screened, meta={**model.meta, "onnx_export": how})
        data = load_data(model, held_out, f"nas data ({name})", None, None, val_samples)
        reference = reference_outputs(model, data, prof.target.resolved_threads)
        plan = make_plan(model, prof, self.formats, explicit=True)
        steps = tuple(replace(s, precisions=(self.precision,) if s.format.name == self.format else
                              tuple(p for p in s.precisions if s.format.embeds), fallback={}) for s in plan.steps)
        plan = replace(plan, steps=steps)
        folder = self.scratch / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            artifacts, failures = run_plan(plan, model, reference, data, prof, folder, work, self.tf, self.log,
                                           self.stages, {})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
        scored = next((a for a in artifacts if a.format == self.format and a.precision == self.precision), None)
        if scored is None or scored.validation is None or scored.bench is None:
            why = next((f for f in failures if f.format == self.format), failures[0] if failures else None)
            raise StageError(why.stage if why else "measure", why.reason if why else "the scored file was not made")
        key = PRIMARY.get(data.task, "cosine")
        metric = float(scored.validation.metrics.get(key, 0.0))
        fp32 = float(reference.metrics.get(key, metric))
        c_array = next((a for a in artifacts if a.format == "c_array"), None)
        tflm = c_array.export.tflm if c_array is not None else None
        device_bytes = c_array.device_bytes if c_array is not None else scored.device_bytes
        b = scored.bench
        notes = tuple(dict.fromkeys(n for a in artifacts for n in a.export.notes + tuple(a.bench.notes if a.bench else ())))
        return Measured(scored.file, self.format, self.precision, scored.runtime, metric, fp32, fp32 - metric,
                        b.p50_ms, b.p90_ms, b.p99_ms, device_bytes,
                        tflm.arena_bytes if tflm is not None and tflm.loads else None,
                        None if tflm is None else tflm.loads, sum(p.numel() for p in module.parameters()),
                        round(time.perf_counter() - start, 2), cpu_info()["model"], notes)


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)
