"""ExecuTorch ``.pte`` for torch sources: ``torch.export`` -> ``to_edge_transform_and_lower`` with the XNNPACK
partitioner -> ``to_executorch``. The program is exported at batch 1 with the data's shapes (what an app runs),
carries its tensor names (runtimes/executorch.py), and is refused when less than the profile's
``target.min_delegated_share`` of its ops went to XNNPACK: the rest would run on ExecuTorch's portable
reference kernels, far slower than any other file of the bundle.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..core.errors import StageError, UsageError
from ..core.iospec import IOSpec, TensorSpec
from ..core.results import ExportInfo
from .job import Exported, ExportJob
from .xnnpack_rewrites import edge_views, xnnpack_rewrites

EXTRA = "pip install 'edgekit[executorch]'"
REFUSAL = ("ExecuTorch lowers a torch program (torch.export), and this is {kind} source: give the torch model "
           "(FILE.py:FUNC --weights) to get a .pte, or leave executorch out of --formats")
_SKIP = {"getitem", "executorch_call_delegate"}  # bookkeeping nodes, not ops


def example_args(model, calibration) -> tuple:
    """Batch-1 torch tensors in the forward's order: the first calibration sample (the data's shapes)."""
    import torch

    src = calibration.inputs if calibration is not None and len(calibration) else model.example_inputs
    return tuple(torch.from_numpy(np.ascontiguousarray(src[t.name][:1], dtype=t.dtype)) for t in model.iospec.inputs)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:240]}" if text else type(exc).__name__


def _root(exc: BaseException) -> str:
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    return "" if root is exc else f" ({_line(root)})"


def lowering_error(stage: str, exc: BaseException) -> StageError:
    """One line for a failure inside torch.export, PT2E or ExecuTorch: the error and, when the pass manager
    wraps it, its root cause."""
    return StageError(stage, f"XNNPACK lowering failed: {_line(exc)}" + _root(exc))


def lower(module, args: tuple, iospec: IOSpec, stage: str, min_share: float, precision: str = "fp32"):
    """(the .pte bytes, the delegation summary). Raises StageError naming ``stage`` when the share is too low."""
    import torch

    from ..runtimes.executorch import import_executorch
    import_executorch(lowering=True)
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    names = ",".join(t.name for t in iospec.inputs) + "|" + ",".join(t.name for t in iospec.outputs)
    with warnings.catch_warnings():  # torch's pytree deprecations, once per serialised node
        warnings.simplefilter("ignore", FutureWarning)
        try:
            program = module if isinstance(module, torch.export.ExportedProgram) else torch.export.export(module, args)
            program = xnnpack_rewrites(program)
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()],
                                               transform_passes=[edge_views],
                                               constant_methods={"edgekit_io": names, "edgekit_precision": precision})
            info = get_delegation_info(edge.exported_program().graph_module)
        except Exception as exc:  # noqa: BLE001 - the pass manager wraps the real error: say both in one line
            raise lowering_error(stage, exc) from exc
    by_op = {op: (b.delegated, b.non_delegated) for op, b in info.delegation_by_operator.items()
             if not any(s in op for s in _SKIP)}
    delegated = sum(d for d, _ in by_op.values())
    total = delegated + sum(n for _, n in by_op.values())
    share = delegated / total if total else 1.0
    left = {op: n for op, (_, n) in by_op.items() if n}
    summary = {"delegate": "XNNPACK", "delegated_nodes": delegated, "nodes": total, "delegated_share": round(share, 4),
               "subgraphs": info.num_delegated_subgraphs, "not_delegated": left}
    if share < min_share:
        worst = ", ".join(f"{op} x{n}" for op, n in sorted(left.items(), key=lambda kv: -kv[1])[:5])
        raise StageError(stage, f"only {share:.0%} of the graph's {total} ops were delegated to XNNPACK (the profile "
                                f"asks for {min_share:.0%}: target.min_delegated_share); the rest would run on "
                                f"portable kernels: {worst}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            return edge.to_executorch().buffer, summary
        except Exception as exc:  # noqa: BLE001
            raise lowering_error(stage, exc) from exc


def static_spec(model, args: tuple) -> IOSpec:
    """The source's IOSpec at the program's static batch-1 shapes (outputs from one run)."""
    import torch

    with torch.no_grad():
        outs = model.module(*args)
    flat = list(outs.values()) if isinstance(outs, dict) else list(outs) if isinstance(outs, (tuple, list)) else [outs]
    ins = tuple(TensorSpec(t.name, tuple(a.shape), t.dtype, t.layout) for t, a in zip(model.iospec.inputs, args))
    outs_spec = tuple(TensorSpec(t.name, tuple(o.shape), t.dtype, t.layout) for t, o in zip(model.iospec.outputs, flat))
    return IOSpec(ins, outs_spec)


def export_executorch(job: ExportJob) -> list[Exported]:
    from importlib.metadata import version

    model = job.model
    if model.kind != "torch" or model.loader == "torchscript":
        kind = "a TorchScript" if model.loader == "torchscript" else f"an {model.kind.upper()}" if model.kind == "onnx" \
            else "a Keras"
        raise UsageError(f"{model.origin}: " + REFUSAL.format(kind=kind))
    args = example_args(model, job.calibration)
    target = job.folder / f"{model.name}.pte"
    buffer, summary = lower(model.module, args, model.iospec, "export executorch", job.min_delegated_share)
    Path(target).write_bytes(buffer)
    info = ExportInfo(f"executorch {version('executorch')} (to_edge_transform_and_lower, XNNPACK)",
                      details={"static_shapes": True}, delegation=summary)
    return [Exported(target, "executorch", "fp32", info, mapping=static_spec(model, args))]
