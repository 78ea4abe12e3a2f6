"""Export the reference graph: fp32 ONNX with named inputs/outputs and a dynamic batch axis."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from ..errors import StageError, one_line
from ..model import Model
from ..results import ExportInfo
from ..runtimes.torch_runner import torch_threads
from .job import Exported, ExportJob

OPSET = 18


def export_onnx_torch(job: ExportJob) -> list[Exported]:
    """The exporter for torch sources: torch.onnx (torch.export-based, TorchScript as the fallback)."""
    out = job.folder / f"{job.model.name}.onnx"
    info = export_onnx(job.model, out, job.log)
    exporter = info.pop("exporter")
    return [Exported(out, "onnx", "fp32", ExportInfo(exporter, details=info))]


def copy_onnx(job: ExportJob) -> list[Exported]:
    """The exporter for ONNX sources: the file itself is the reference graph."""
    out = job.folder / f"{job.model.name}.onnx"
    shutil.copyfile(job.model.onnx_path, out)
    return [Exported(out, "onnx", "fp32", ExportInfo("copy of the source ONNX file",
                                                     details={"dynamic_batch": job.model.iospec.batch_dynamic}))]


def export_onnx(model: Model, out: Path, log: io.StringIO | None = None, *, screening: bool = False) -> dict:
    """Write the torch ``model`` to ``out`` as fp32 ONNX; returns how it was exported.

    The torch.export-based exporter goes first, with a dynamic batch axis; a model whose batch axis
    cannot be dynamic is exported with a static batch, and a model torch.export cannot capture
    falls back to the TorchScript exporter. Each choice is recorded.
    ``screening``: a graph that is measured, not shipped (pruning attempts): the TorchScript
    exporter goes first, as it takes ~0.3 s where torch.export takes ~7 s on the example.
    """
    import onnx

    if model.onnx_path is not None and "onnx_export" in model.meta:  # exported (and checked) by the pruning search
        shutil.copyfile(model.onnx_path, out)
        return dict(model.meta["onnx_export"])
    log = log if log is not None else io.StringIO()
    attempts = [("torch.export", True), ("torch.export", False), ("torchscript", False)]
    if model.loader == "torchscript":
        attempts = [("torchscript", True), ("torchscript", False)]
    if not model.iospec.batch_dynamic:
        attempts = [a for a in attempts if not a[1]]
    if screening:  # the TorchScript exporter first, keeping the dynamic-then-static order
        attempts = sorted(attempts, key=lambda a: a[0] != "torchscript")
    errors = []
    for exporter, dynamic in attempts:
        try:
            _export(model, out, exporter, dynamic)
            _strip_debug_metadata(out)
            onnx.checker.check_model(str(out))
            return {"exporter": f"torch.onnx ({exporter})", "opset": OPSET, "dynamic_batch": dynamic}
        except Exception as exc:  # each exporter fails in its own way; all are logged
            errors.append(f"{exporter}{' dynamic batch' if dynamic else ''}: {one_line(exc)}")
            log.write(f"export attempt failed: {errors[-1]}\n")
            out.unlink(missing_ok=True)
    raise StageError("export onnx", " | ".join(errors))


def _strip_debug_metadata(path: Path) -> None:
    """Drop per-node stack traces and scopes the exporter records: they are for debugging, and in a
    deployable file they cost ~10% of a small model's bytes (more after quantization)."""
    import onnx

    proto = onnx.load(str(path))
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(proto, str(path))


def _export(model: Model, out: Path, exporter: str, dynamic: bool) -> None:
    import torch

    args = tuple(torch.from_numpy(model.example_inputs[n]) for n in model.iospec.input_names)
    names_in, names_out = model.iospec.input_names, model.iospec.output_names
    kwargs = dict(input_names=names_in, output_names=names_out, opset_version=OPSET)
    if exporter == "torch.export":
        if dynamic:
            batch = torch.export.Dim("batch", min=1, max=4096)
            kwargs["dynamic_shapes"] = tuple({0: batch} for _ in args)
        kwargs.update(dynamo=True, external_data=False, optimize=True, verbose=False)
    else:
        if dynamic:
            kwargs["dynamic_axes"] = {n: {0: "batch"} for n in names_in + names_out}
        kwargs.update(dynamo=False)
    with torch_threads(os.cpu_count() or 1):  # torch.export's tracing state is the process's: one export at a time
        torch.onnx.export(model.module, args, str(out), **kwargs)
