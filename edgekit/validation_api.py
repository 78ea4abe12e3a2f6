"""validate_against(): one exported file vs a reference model, outside a build."""
from __future__ import annotations

from pathlib import Path

from .formats import format_table
from .errors import UsageError
from .stages import load_data, load_source
from .results import ValidationResult
from .validate import reference_outputs, validate_file


def validate_against(file, *, model=None, weights=None, data=None, task=None, threads: int = 1,
                     trust_pickle: bool = False) -> ValidationResult:
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
        from .onnx_io import iospec_from_onnx, load_onnx
        own = iospec_from_onnx(load_onnx(path)).input_names
        if sorted(own) != sorted(source.iospec.input_names):
            raise UsageError(f"{file} takes input(s) {', '.join(own)} but the reference model "
                             f"{source.origin} takes {', '.join(source.iospec.input_names)}; pass the matching --model")
    runner = None
    if fmt.runtime == "litert":  # tie the file's tensors (names, NHWC) to the reference model's
        from .export.tflite import map_to_source
        from .runtimes import open_runner
        runner = open_runner(path, fmt.runtime, threads=threads, mapping=map_to_source(path, source.iospec))
    return validate_file(path, reference, dataset, fmt.tolerance_for("fp32"), runtime=fmt.runtime, threads=threads,
                         raise_on_failure=False, runner=runner)
