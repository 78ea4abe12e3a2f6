"""The build's stages as functions: each takes products and config and returns a new product."""
from __future__ import annotations

import contextlib
import io
import time
import traceback
from dataclasses import replace
from typing import TYPE_CHECKING, Iterator

from ..core.artifact import Artifact, file_digest
from ..measure.bench import bench_file
from ..core.data import Data, prepare, read_arrays
from ..core.errors import EdgekitError, StageError, UsageError, one_line
from ..export import Exported, formats_with_exporters
from ..targets.formats import get_format
from ..files.graph_stats import zip_bytes
from ..core.model import Model
from ..files.onnx_io import iospec_from_onnx
from ..files.precision import precision_map
from ..targets.profiles import DeviceProfile
from ..core.record import Comparison, FileSpeed
from ..core.results import TflmCheck
from ..runtimes import open_runner
from ..sources.load import load_model
from ..measure.validate import Reference, other_size_check, validate_file
from ..runtimes.tflm import TflmRunner

if TYPE_CHECKING:  # only for the annotations: edgekit.device is imported where a device is used
    from ..device import Device


@contextlib.contextmanager
def stage(name: str, log: io.StringIO, progress=None) -> Iterator[None]:
    """Run one stage: user errors pass through, anything else becomes a StageError naming it."""
    if progress is not None:
        progress(name)
    log.write(f"== {name}\n")
    started = time.perf_counter()
    try:
        yield
    except EdgekitError:
        log.write(traceback.format_exc())
        raise
    except Exception as exc:
        log.write(traceback.format_exc())
        raise StageError(name, one_line(exc)) from exc
    log.write(f"-- {name}: {time.perf_counter() - started:.1f} s\n")


def load_source(model, weights, data_path, trust_pickle, dynamic=None) -> tuple[Model, dict | None, str]:
    """The Model and the raw data arrays (the built-in example when ``model`` is None)."""
    arrays = read_arrays(data_path) if data_path is not None else None
    if isinstance(model, Model):
        return model, arrays, str(data_path or "")
    if model is None:
        from ..examples import digits
        if weights is not None:
            raise UsageError("--weights needs a MODEL; the built-in example ships its own weights")
        return digits.load_model(), arrays if arrays is not None else digits.load_arrays(), str(data_path or "built-in digits (held-out 30%)")
    loaded = load_model(str(model), weights=weights, trust_pickle=trust_pickle, sample_inputs=arrays, dynamic=dynamic)
    return loaded, arrays, str(data_path or "")


def load_data(model: Model, arrays: dict | None, source: str, task, calib_samples, val_samples,
              transfer: float = 0.0, static: dict[str, int] | None = None) -> Data:
    if arrays is None:
        raise UsageError(f"model {model.origin} has no validation data: pass --data samples.npz (arrays named after the inputs "
                         f"{', '.join(model.iospec.input_names)} or 'x', labels in 'y') to validate the build")
    if static:
        arrays = at_static_shape(arrays, model, static)
    return prepare(arrays, model.iospec, source=source, task=task, calib_samples=calib_samples, val_samples=val_samples,
                   transfer=transfer)


def at_static_shape(arrays: dict, model: Model, static: dict[str, int]) -> dict:
    """The arrays cut to ``static`` ({dynamic axis name: size}) along those axes: TFLite and the C array are
    fixed to that size, and every file is validated there (the ONNX file again at 3/4 of it)."""
    named = {name: (t, axis) for t in model.iospec.inputs for axis, name in t.dynamic_axes.items() if axis > 0}
    unknown = sorted(set(static) - set(named))
    if unknown:
        raise UsageError(f"--static-shape {', '.join(unknown)}: the model has no such dynamic axis (its dynamic "
                         f"axes: {', '.join(named) or 'none besides the batch'})")
    out = dict(arrays)
    for name, size in static.items():
        t, axis = named[name]
        for key in (k for k in (t.name, "x", t.name + "_train", "x_train") if k in out):
            have = out[key].shape[axis]
            if size > have:
                raise UsageError(f"--static-shape {name}={size}: the data's '{key}' has {have} along {name}; give "
                                 f"data at least {size} long there, or a smaller size")
            index = [slice(None)] * out[key].ndim
            index[axis] = slice(0, size)
            out[key] = out[key][tuple(index)]
    return out


def measure(exported: Exported, reference: Reference, data: Data, profile: DeviceProfile,
            model: Model | None = None, device: Device | None = None) -> Artifact:
    """Validate a file in its runtime against the reference (once: a file a search already validated keeps
    that result), then time it; an Artifact. With a ``device`` (``edgekit.device.Device``) a file whose
    runtime the device has is validated and timed there too, and its Artifact carries the device's figures."""
    fmt = get_format(exported.format)
    threads = profile.target.resolved_threads
    run_path = exported.path.parent / exported.info.embeds if exported.info.embeds else exported.path
    info = exported.info
    try:
        runner = open_runner(run_path, fmt.runtime, threads=threads, mapping=exported.mapping)
    except UsageError as exc:
        if fmt.runtime != "tflm":  # edgekit wrote this file: its runtime refusing it is edgekit's failure
            raise StageError(f"load {exported.path.name}", str(exc).replace(str(run_path), run_path.name)) from None
        runner, info = None, replace(info, tflm=TflmCheck(False, error=str(exc).replace(str(run_path), run_path.name)))
    runner_notes = getattr(runner, "notes", ())
    if runner_notes:
        info = replace(info, notes=info.notes + tuple(runner_notes))
    validation = exported.validation
    if runner is not None and validation is None:
        validation = validate_file(run_path, reference, data, fmt.tolerance_for(exported.precision),
                                   runtime=fmt.runtime, threads=threads, runner=runner)
    on_device = device if runner is not None and fmt.runtime in ("onnxruntime", "litert") else None
    if on_device is not None and not on_device.can_run(fmt.runtime):
        info = info.with_details(measured_on=f"host: {on_device.where} has no {fmt.runtime}")
        on_device = None
    elif device is not None and on_device is None:
        info = info.with_details(measured_on=f"host: {device.where} does not run {fmt.runtime} files")
    if on_device is not None:
        info, validation = _validate_on_device(on_device, run_path, runner, reference, data, fmt, exported, info,
                                               validation)
    if model is not None and fmt.runtime == "onnxruntime" and runner is not None:
        check = other_size_check(run_path, model, data, runtime=fmt.runtime, threads=threads, runner=runner)
        if check is not None:
            info = info.with_details(other_size=check)
            if check["checked"] and not check["runs"]:
                raise StageError(f"validate {exported.path.name}", f"the file does not run at {check['shapes']}, "
                                 f"a size its dynamic axes allow: {check.get('error', 'outputs missing')}")
    timing = None
    if fmt.runtime == "tflm" and isinstance(runner, TflmRunner):
        info = replace(info, tflm=TflmCheck(True, runner.arena_used_bytes(), note=(
            "TFLite-Micro runs reference kernels on this host; its latency here says nothing about an MCU, "
            "so it is not timed")))
    elif fmt.runtime != "tflm" and runner is not None:  # only a tflm file may have no runner
        b = profile.bench
        one = sample_for(runner.file_spec, {k: v[:1] for k, v in data.validation.inputs.items()})
        if on_device is not None:
            from ..device.remote import device_bench
            timing = device_bench(on_device, run_path, fmt.runtime, one, threads=threads, warmup=b.warmup, runs=b.runs,
                                  min_seconds=b.min_seconds, repeat=b.repeat, max_seconds=b.max_seconds)
        else:
            timing = bench_file(run_path, runtime=fmt.runtime, threads=threads, warmup=b.warmup, runs=b.runs,
                                batch=b.batch, max_seconds=b.max_seconds, inputs=one, batches=tuple(b.batches),
                                min_seconds=b.min_seconds, repeat=b.repeat)
    sha, size = file_digest(exported.path)
    iospec = (exported.mapping or iospec_from_onnx(exported.path)).to_dict()
    if run_path.suffix == ".tflite":
        iospec = _with_io_quantization(iospec, run_path)
    return Artifact(file=exported.path.name, format=exported.format, precision=exported.precision,
                    runtime=fmt.runtime, sha256=sha, bytes=size, iospec=iospec, precision_map=precision_map(run_path),
                    export=info, validation=validation, bench=timing, zip_bytes=zip_bytes(exported.path))


def _with_io_quantization(iospec: dict, path) -> dict:
    """The manifest's IOSpec with each integer input/output's ``quantization`` (scale, zero_point) from the file."""
    from ..files.tflite_info import io_quantization

    quant = io_quantization(path)
    def add(t: dict) -> dict:
        return {**t, "quantization": quant[t["name"]]} if t["name"] in quant else t
    return {side: [add(t) for t in iospec[side]] for side in ("inputs", "outputs")}


def _validate_on_device(device: Device, run_path, runner, reference, data, fmt, exported, info, host_validation):
    """The device's validation replaces the host's in the Artifact; the host's stays beside it."""
    from ..device.remote import validate_on_device
    from ..core.errors import ValidationFailed
    from ..runtimes.base import run_batched

    tolerance = fmt.tolerance_for(exported.precision)
    host_outputs = run_batched(runner, data.validation.inputs)
    validation, side = validate_on_device(device, run_path, runner, reference, data, tolerance, host_outputs)
    side["host"] = {"metrics": host_validation.metrics, "drop": host_validation.drop}
    info = info.with_details(measured_on=device.where, device_check=side)
    if not side["within_tolerance_of_host"]:
        info = replace(info, notes=info.notes + (
            f"{device.where}: the outputs differ from the host's beyond the {exported.precision} tolerance "
            f"(max |diff| {max(side['max_abs_diff_vs_host'].values(), default=float('nan')):.3g})",))
    if validation.failures:
        raise ValidationFailed(f"{exported.path.name} on {device.where}", list(validation.failures))
    return info, validation


def sample_for(file_spec, source_inputs: dict):
    """One sample keyed and laid out the way the file itself takes it (for the bench process); ``None``:
    the file takes the source's tensors as they are."""
    from ..runtimes.mapping import to_file

    if file_spec is None:
        return source_inputs
    return {t.name: to_file(t, source_inputs[t.source_name or t.name]) for t in file_spec.inputs}


def pending_settings(profile: DeviceProfile, formats: tuple[str, ...]) -> list[str]:
    """Profile settings that later stages will apply, said out loud instead of skipped."""
    out = []
    if profile.target.accelerator == "gpu-if-present":
        from ..runtimes.ort import cuda_available

        out.append("GPU found (onnxruntime's CUDA provider): the build validates and times on the CPU; "
                   "`edgekit serve` runs the files on CUDA, or TensorRT with --device tensorrt"
                   if cuda_available() else "no GPU found: CPU path (target.accelerator = gpu-if-present)")
    for name in formats:
        if name not in formats_with_exporters():
            out.append(f"format '{name}': not applied yet (no exporter registered)")
    return out


def check_compressible(model: Model, profile: DeviceProfile, explicit: bool) -> str | None:
    """None when ``profile``'s compression can run on ``model``; else why not. Asked for on the command
    line, that is a usage error (exit 2) before any work; asked for by the profile, a note."""
    if not profile.prune.active:
        return None
    why = None
    if model.kind != "torch":
        why = (f"{model.origin} is a {'Keras model' if model.kind == 'keras' else 'ONNX graph'}: pruning, low-rank "
               "and weight sharing need the torch source (file.py:factory with --weights)")
    elif model.loader in ("torchscript", "torch.export"):
        kind = "TorchScript" if model.loader == "torchscript" else "a torch.export program"
        why = (f"{model.origin} is {kind}, a traced graph without layer modules to restructure: pass the torch "
               "source (file.py:factory with --weights) to prune it")
    if why and explicit:
        raise UsageError(f"{why}; drop the pruning options (or pass --prune-method none) to quantize and export it as is")
    return None if why is None else f"compression skipped: {why}; the model is quantized and exported as is"


def speed_verdicts(artifacts: list[Artifact], folder, data: Data, profile: DeviceProfile) -> dict[str, FileSpeed]:
    """Each timed file against its fp32 twin and against the fp32 ONNX file, from interleaved rounds in
    one process (measure/compare.py): a speedup or slowdown is stated only when every round agrees."""
    from ..measure.compare import interleaved, verdict
    from ..core.iospec import IOSpec

    timed = [a for a in artifacts if a.bench is not None]
    if len(timed) < 2:
        return {}
    one = {k: v[:1] for k, v in data.validation.inputs.items()}
    files = []
    for a in timed:
        spec = IOSpec.from_dict(a.iospec)
        sample = sample_for(spec, one) if any(t.source_name or t.source_perm for t in spec.inputs) else \
            {t.name: one[t.name] for t in spec.inputs}
        files.append((folder / a.file, a.runtime, sample))
    rounds = interleaved(files, threads=profile.target.resolved_threads)
    by_file = dict(zip((a.file for a in timed), rounds))
    onnx = next((a.file for a in timed if a.format == "onnx" and a.precision == "fp32"), None)
    out = {}
    for a in timed:
        twin = next((t.file for t in timed if t.format == a.format and t.precision == "fp32"), None)
        vs_twin = Comparison(**verdict(by_file[twin], by_file[a.file]), twin=twin) if twin and twin != a.file else None
        vs_onnx = Comparison(**verdict(by_file[onnx], by_file[a.file])) if onnx else None
        out[a.file] = FileSpeed(tuple(by_file[a.file]), vs_twin, vs_onnx)
    return out
