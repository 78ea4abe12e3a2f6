"""Export the reference graph: fp32 ONNX with named inputs/outputs and a dynamic batch axis."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

from ..core.errors import StageError, one_line
from ..core.model import Model
from ..core.results import ExportInfo
from ..runtimes.torch_runner import torch_threads
from .job import Exported, ExportJob

OPSET = 18


def export_onnx_torch(job: ExportJob) -> list[Exported]:
    """The exporter for torch sources: torch.onnx (torch.export-based, TorchScript as the fallback)."""
    out = job.folder / f"{job.model.name}.onnx"
    info = export_onnx(job.model, out, job.log)
    exporter = info.pop("exporter")
    notes = (info.pop("fallback"),) if "fallback" in info else ()
    return [Exported(out, "onnx", "fp32", ExportInfo(exporter, notes=notes, details=info))]


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
    attempts = [("torch.export", True), ("torch.export", False), ("torchscript", True), ("torchscript", False)]
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
            _finish(out, model.iospec.output_names, model.iospec.inputs)
            onnx.checker.check_model(str(out))
            info = {"exporter": f"torch.onnx ({exporter})", "opset": OPSET, "dynamic_batch": dynamic}
            if errors:
                lost = " (dynamic batch lost: the file takes batch 1 only)" if model.iospec.batch_dynamic and not dynamic else ""
                info["fallback"] = (f"exporter fallback: {errors[0]}; exported with {exporter}"
                                    f"{' and a dynamic batch' if dynamic else ''}{lost}")
            return info
        except Exception as exc:  # each exporter fails in its own way; all are logged
            errors.append(f"{exporter}{' dynamic batch' if dynamic else ''}: {one_line(exc)}")
            log.write(f"export attempt failed: {errors[-1]}\n")
            out.unlink(missing_ok=True)
    raise StageError("export onnx", " | ".join(errors))


_OUT = "edgekit_output_{}"  # exported under these names, renamed after: a user's name may collide with the exporter's


def _finish(path: Path, names: list[str], inputs: tuple = ()) -> None:
    """Name the outputs as the source does, and drop per-node stack traces and scopes the exporter records:
    they are for debugging, and in a deployable file they cost ~10% of a small model's bytes."""
    import onnx

    proto = onnx.load(str(path))
    g = proto.graph
    for node in g.node:
        del node.metadata_props[:]
        node.doc_string = ""
    renames = {o.name: want for o, want in zip(g.output, names) if o.name != want}
    taken = {v for n in g.node for v in list(n.input) + list(n.output)} | {i.name for i in g.input} \
        | {t.name for t in g.initializer}
    for want in list(renames.values()):  # an internal value already called ``want`` steps aside first
        if want in taken and want not in renames:
            renames[want] = f"{want}__internal"
    for node in g.node:
        node.input[:] = [renames.get(v, v) for v in node.input]
        node.output[:] = [renames.get(v, v) for v in node.output]
    for v in list(g.output) + list(g.value_info):
        v.name = renames.get(v.name, v.name)
    symbols = {}  # the exporter's own axis symbols (s53) -> the source's axis names (time)
    for spec in inputs:
        graph_input = next((i for i in g.input if i.name == spec.name), None)
        if graph_input is None:
            continue
        for axis, name in spec.dynamic_axes.items():
            dim = graph_input.type.tensor_type.shape.dim[axis]
            if dim.dim_param and dim.dim_param != name:
                symbols[dim.dim_param] = name
    for v in list(g.input) + list(g.output) + list(g.value_info):
        for dim in v.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = symbols[dim.dim_param]
    onnx.save(proto, str(path))


def _export(model: Model, out: Path, exporter: str, dynamic: bool) -> None:
    import torch

    args = tuple(torch.from_numpy(model.example_inputs[n]) for n in model.iospec.input_names)
    names_in = model.iospec.input_names
    names_out = [_OUT.format(i) for i in range(len(model.iospec.output_names))]
    kwargs = dict(input_names=names_in, output_names=names_out, opset_version=OPSET)
    specs = [model.iospec.input(n) for n in names_in]
    others = [{i: d for i, d in t.dynamic_axes.items() if i > 0} for t in specs]  # non-batch dynamic axes
    if exporter == "torch.export":
        dims: dict[str, object] = {}

        def dim(name: str):
            if name not in dims:  # one Dim per name: axes that share a name share a size
                dims[name] = torch.export.Dim.AUTO if name != "batch" else torch.export.Dim("batch", min=1, max=4096)
            return dims[name]
        shapes = tuple({**({0: dim("batch")} if dynamic else {}), **{i: dim(d) for i, d in o.items()}} or None
                       for o in others)
        if any(shapes):
            kwargs["dynamic_shapes"] = shapes
        if dynamic:  # traced at batch 1, torch specialises the batch to the constant 1 (its 0/1 rule): trace at 2
            args = tuple(torch.cat([a, a]) for a in args)
        kwargs.update(dynamo=True, external_data=False, optimize=True, verbose=False)
    else:
        axes = {n: {**({0: "batch"} if dynamic else {}), **o} for n, o in zip(names_in, others)}
        if dynamic:
            axes.update({n: {0: "batch"} for n in names_out})
        kwargs["dynamic_axes"] = {n: a for n, a in axes.items() if a} or None
        kwargs.update(dynamo=False)
    with torch_threads(os.cpu_count() or 1):  # torch.export's tracing state is the process's: one export at a time
        try:
            torch.onnx.export(model.module, args, str(out), **kwargs)
        except Exception as exc:
            if exporter != "torch.export" or not dynamic or "Constraints violated" not in str(exc):
                raise
            # the module bounds its batch itself (a .pt2 saved with its own range): torch.export finds the range
            kwargs["dynamic_shapes"] = tuple({**(s or {}), 0: torch.export.Dim.AUTO} for s in shapes)
            torch.onnx.export(model.module, args, str(out), **kwargs)
            import onnx

            first = onnx.load(str(out), load_external_data=False).graph.input[0]
            if not first.type.tensor_type.shape.dim[0].dim_param:
                raise RuntimeError("torch.export fixed the batch axis") from exc
