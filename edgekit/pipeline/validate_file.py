"""validate_against(): one exported file vs a reference model, outside a build."""
from __future__ import annotations

from pathlib import Path

from ..targets.formats import format_table
from ..core.errors import UsageError
from .stages import load_data, load_source
from ..core.results import ValidationResult
from ..measure.validate import reference_outputs


def validate_against(file, *, model=None, weights=None, data=None, task=None, threads: int = 1,
                     trust_pickle: bool = False, save_outputs=None) -> ValidationResult:
    """The file on the validation split, judged with its own precision's tolerance (integer files by the
    metric alone). ``save_outputs``: an .npz path that receives the file's outputs by name, and the labels."""
    from ..runtimes.base import run_batched
    from ..measure.validate import judge_outputs

    if save_outputs is not None and Path(save_outputs).suffix != ".npz":  # refused before any work
        raise UsageError(f"--save-outputs {save_outputs}: give a file name ending in .npz")
    path, fmt, runner, reference, dataset = _prepare(file, model, weights, data, task, threads, trust_pickle)
    outputs = run_batched(runner, dataset.validation.inputs)
    if save_outputs is not None:
        _save_outputs(Path(save_outputs), outputs, dataset)
    return judge_outputs(outputs, path, runner.runtime, reference, dataset, fmt.tolerance_for(file_precision(path)),
                         raise_on_failure=False)


def file_precision(path: Path) -> str:
    """The lowest precision the file stores weights at (fp32, fp16, int8, int4): what its tolerance follows."""
    from ..files.precision import precision_map

    stored = set(precision_map(path).values())
    if Path(path).suffix == ".xml":  # an IR computed in bf16 is judged as bf16, whatever its weights are stored at
        from ..runtimes.openvino import import_openvino, stored_hint

        if stored_hint(import_openvino().Core().read_model(str(path))) == "bf16" and not stored & {"int4", "int8"}:
            return "bf16"
    return next((p for p in ("int4", "int8", "fp16") if p in stored), "fp32")


def _save_outputs(target: Path, outputs: dict, dataset) -> None:
    import numpy as np

    arrays = dict(outputs)
    if dataset.validation.labels is not None:
        arrays["labels"] = dataset.validation.labels
    if dataset.validation.index is not None:
        arrays["index"] = dataset.validation.index  # which samples of the data file these are
    tmp = target.with_name(f".{target.name}.partial.npz")
    np.savez(tmp, **arrays)
    tmp.replace(target)


def validate_on_device(file, device: str, *, model=None, weights=None, data=None, task=None, threads: int = 1,
                       trust_pickle: bool = False, accept_host_key: bool = False
                       ) -> tuple[ValidationResult, ValidationResult, dict]:
    """``edgekit validate FILE --device URL``: the validation split on the host and on the device, judged by
    the same code. (host result, device result, how far the device's outputs are from the host's)."""
    from ..device import open_device
    from ..device.remote import validate_on_device as on_device
    from ..runtimes.base import run_batched
    from ..measure.validate import judge_outputs

    path, fmt, runner, reference, dataset = _prepare(file, model, weights, data, task, threads, trust_pickle)
    tolerance = fmt.tolerance_for(file_precision(path))
    with open_device(device, accept_host_key=accept_host_key) as dev:
        host_outputs = run_batched(runner, dataset.validation.inputs)
        host = judge_outputs(host_outputs, path, runner.runtime, reference, dataset, tolerance, raise_on_failure=False)
        there, side = on_device(dev, path, runner, reference, dataset, tolerance, host_outputs)
    return host, there, side


def _prepare(file, model, weights, data, task, threads, trust_pickle):
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"file {file} not found; check the path")
    fmt = next((f for f in format_table().values() if f.suffix == path.suffix), None)
    if fmt is None:
        raise UsageError(f"{file}: unknown file type '{path.suffix}'")
    source, arrays, data_source = load_source(model, weights, data, trust_pickle)
    dataset = load_data(source, arrays, data_source, task, None, None)
    reference = reference_outputs(source, dataset, threads)
    if fmt.runtime == "onnxruntime":
        from ..files.onnx_io import iospec_from_onnx, load_onnx
        own = iospec_from_onnx(load_onnx(path)).input_names
        if sorted(own) != sorted(source.iospec.input_names):
            raise UsageError(f"{file} takes input(s) {', '.join(own)} but the reference model "
                             f"{source.origin} takes {', '.join(source.iospec.input_names)}; pass the matching --model")
    from ..runtimes import open_runner
    mapping = None
    if fmt.runtime == "litert":  # tie the file's tensors (names, NHWC) to the reference model's
        from ..export.tflite import map_to_source
        mapping = map_to_source(path, source.iospec)
    runner = open_runner(path, fmt.runtime, threads=threads, mapping=mapping)
    return path, fmt, runner, reference, dataset
