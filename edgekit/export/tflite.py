"""TFLite export: the reference ONNX graph through onnx2tf, run in the converter worker. Never touches
the network.

onnx2tf fetches sample images from the internet when every input is a 4-D, 3-channel tensor
with a static batch <= 20 (``download_test_image_data``). edgekit hands it the build's own
calibration samples instead, so the conversion stays offline whatever the model's shape. The
SavedModel onnx2tf leaves behind is kept for the quantization passes, so the model is converted once.
"""
from __future__ import annotations

import itertools
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.errors import StageError
from ..core.iospec import IOSpec, layout_fit
from ..core.results import ExportInfo
from .onnx_lower import lower_padded_pools, positive_reduce_axes
from .job import Exported, ExportJob


def export_tflite_torch(job: ExportJob) -> list[Exported]:
    """fp32 .tflite for torch sources: onnx2tf from the reference ONNX graph; where onnx2tf cannot convert
    the graph (transformer encoders, for one), litert-torch from the torch module itself, when installed."""
    import importlib.util

    try:
        return export_tflite_onnx2tf(job)
    except StageError as exc:
        if importlib.util.find_spec("litert_torch") is None:
            raise StageError("export tflite", f"{str(exc).split(': ', 1)[-1]}; for torch sources, litert-torch can "
                                              "convert what onnx2tf cannot: pip install 'edgekit[tflite-torch]'") from None
        job.log.write(f"onnx2tf failed ({exc}); converting the torch module with litert-torch\n")
        made = export_tflite_litert_torch(job)
        why = str(exc).split(": ", 1)[-1][:200]
        entry = made[0]
        return [replace(entry, info=replace(entry.info, notes=entry.info.notes + (
            f"exporter fallback: onnx2tf cannot convert this graph ({why}); converted from the torch module "
            "with litert-torch instead (batch 1)",)))]


def export_tflite_litert_torch(job: ExportJob) -> list[Exported]:
    """litert-torch on the torch module, traced at batch 1 with the data's sizes (run in the converter
    worker, from a torch.export program saved to scratch). Its tensors are positional (args_0, output_0):
    they pair with the source's inputs and outputs in order."""
    import torch

    from ..runtimes.torch_runner import torch_threads

    model = job.model
    names = model.iospec.input_names
    sample = {n: (job.calibration.inputs[n][:1] if job.calibration is not None and n in job.calibration.inputs
                  else model.example_inputs[n][:1]) for n in names}
    program, args = job.scratch / f"{model.name}-litert.pt2", job.scratch / f"{model.name}-litert-args.npz"
    with torch_threads(1):
        exported = torch.export.export(model.module, tuple(torch.from_numpy(np.ascontiguousarray(sample[n]))
                                                            for n in names))
        torch.export.save(exported, str(program))
    np.savez(args, **{f"arg_{i}": sample[n] for i, n in enumerate(names)})
    target = job.folder / f"{model.name}.tflite"
    made = job.tf.call("litert_torch", "export tflite", program=str(program.resolve()), args=str(args.resolve()),
                       out=str(target.resolve()))
    check_builtin_ops(target, "export tflite", "litert-torch")
    mapping = positional_mapping(target, model.iospec)
    fixed = ", ".join(f"{t.name} {list(sample[t.name].shape)}" for t in model.iospec.inputs)
    info = ExportInfo(f"litert-torch {made['version']}", made_from=f"the torch module ({model.origin})",
                      notes=(f"axes fixed for TFLite (it plans memory for one shape): {fixed}",),
                      details={"fixed_axes": fixed, "tensors": "positional (args_i, output_i)"})
    return [Exported(target, "tflite", "fp32", info, mapping, saved_model=None)]


def positional_mapping(path: Path, source: IOSpec) -> IOSpec:
    """A litert-torch file's IOSpec tied to the source by position: its signature names args_i / output_i."""
    from ..runtimes.litert import LiteRTRunner

    runner = LiteRTRunner(path)
    sig = runner.signature_names

    def index(t) -> int:
        m = re.search(r"_(\d+)$", sig.get(t.name, t.name))
        return int(m.group(1)) if m else 0

    def tie(own, src):
        if len(own) != len(src):
            raise StageError("export tflite", f"{path.name} has {len(own)} tensors where the source has {len(src)}")
        return tuple(replace(f, source_name=s.name if s.name != f.name else None, source_perm=layout_fit(f, s)[0])
                     for f, s in zip(sorted(own, key=index), src))
    return IOSpec(tie(runner.file_spec.inputs, source.inputs), tie(runner.file_spec.outputs, source.outputs))


def export_tflite_onnx2tf(job: ExportJob) -> list[Exported]:
    """fp32 .tflite for torch and ONNX sources, from the reference ONNX graph."""
    if job.reference_onnx is None:
        raise StageError("export tflite", "no reference ONNX graph to convert")
    work = job.scratch / f"onnx2tf-{job.model.name}"
    samples = _offline_samples(job, work.with_suffix(".npz"))
    graph, fixed = fix_dynamic_axes(job.reference_onnx, job.model.iospec, job.calibration,
                                    job.scratch / f"{job.model.name}-static.onnx")
    graph, lowered = lower_padded_pools(graph, job.scratch / f"{job.model.name}-lowered.onnx")
    graph, _ = positive_reduce_axes(graph, job.scratch / f"{job.model.name}-axes.onnx")
    try:
        made = job.tf.call("onnx2tf", "export tflite", onnx=str(graph.resolve()), out_dir=str(work.resolve()),
                           samples=samples)
    except StageError as exc:  # a dynamic batch is onnx2tf's most common stumbling block: fix it to 1 and retry
        if not job.model.iospec.batch_dynamic:
            raise
        job.log.write(f"onnx2tf failed with a dynamic batch ({exc}); retrying with batch 1\n")
        shutil.rmtree(work, ignore_errors=True)
        try:
            made = job.tf.call("onnx2tf", "export tflite", onnx=str(graph.resolve()), out_dir=str(work.resolve()),
                               samples=samples, batch_size=1)
        except StageError as again:
            raise StageError("export tflite", f"{str(again).split(': ', 1)[-1]} (with a dynamic batch and with "
                                              "batch 1)") from None
        fixed = ", ".join(x for x in (fixed, "batch = 1 (onnx2tf cannot convert it with a dynamic batch: "
                                             f"{str(exc).split(': ', 1)[-1][:160]})") if x)
    target = job.folder / f"{job.model.name}.tflite"
    shutil.copyfile(made["fp32"], target)
    check_builtin_ops(target, "export tflite", "onnx2tf")
    notes = (f"axes fixed for TFLite (it plans memory for one shape): {fixed}",) if fixed else ()
    if lowered:
        notes += (f"{lowered} padded or ceil-mode MaxPool node(s) given to onnx2tf as edge repetition and an "
                  "unpadded pool (the same numbers), so XNNPACK can run them",)
    info = ExportInfo(f"onnx2tf {made['version']}", made_from=job.reference_onnx.name, notes=notes,
                      details={"fixed_axes": fixed} if fixed else {})
    return [Exported(target, "tflite", "fp32", info, map_to_source(target, job.model.iospec),
                     saved_model=Path(made["saved_model"]))]


def fix_dynamic_axes(path: Path, spec: IOSpec, calibration, out: Path) -> tuple[Path, str]:
    """``path`` with every dynamic non-batch input axis fixed to the calibration data's size (TFLite and
    the C array plan memory for one shape), and what was fixed; ``path`` itself when nothing is dynamic."""
    import onnx

    fixed = {}
    for t in spec.inputs:
        for axis, name in t.dynamic_axes.items():
            if axis > 0 and calibration is not None and t.name in calibration.inputs:
                fixed[(t.name, axis)] = (name, int(calibration.inputs[t.name].shape[axis]))
    if not fixed:
        return path, ""
    proto = onnx.load(str(path))
    for graph_input in proto.graph.input:
        for (name, axis), (_, size) in fixed.items():
            if graph_input.name == name:
                graph_input.type.tensor_type.shape.dim[axis].dim_value = size
    del proto.graph.value_info[:]
    proto = onnx.shape_inference.infer_shapes(proto)
    onnx.save(proto, str(out))
    return out, ", ".join(f"{n} axis {a} ({label}) = {size}" for (n, a), (label, size) in fixed.items())


def check_builtin_ops(path: Path, stage: str, converter: str) -> None:
    """A file that needs TF Select (Flex) or custom ops will not run on LiteRT's builtin runtime: say which."""
    from ..files.tflite_info import read_tflite

    custom = sorted({op.removeprefix("CUSTOM:") for op in read_tflite(path).ops if op.startswith("CUSTOM:")})
    if custom:
        raise StageError(stage, f"{converter} emitted {path.name} with ops LiteRT's builtin runtime cannot run "
                                f"({', '.join(custom)}); the model needs layers with TFLite builtin equivalents")


def map_to_source(path: Path, source: IOSpec, like: IOSpec | None = None) -> IOSpec:
    """The .tflite file's IOSpec with each tensor tied to the source tensor it carries (name, NCHW->NHWC).

    Tensors pair by name (the signature's keys, then the tensor names), else by the one assignment whose
    shapes fit the source's best after the layout change; anything else is ambiguous and fails. ``like``:
    the mapping of the file this one was quantized from; tensors it names keep their pairing."""
    from ..runtimes.litert import LiteRTRunner

    runner = LiteRTRunner(path)
    own, names = runner.file_spec, runner.signature_names
    if like is not None:
        known = {t.name: t for t in (*like.inputs, *like.outputs)}
        if all(t.name in known for t in (*own.inputs, *own.outputs)):
            def keep(tensors):
                return tuple(replace(t, source_name=known[t.name].source_name, source_perm=known[t.name].source_perm,
                                     layout=known[t.name].layout) for t in tensors)
            return IOSpec(keep(own.inputs), keep(own.outputs))
    ins = pair_tensors(list(own.inputs), list(source.inputs), names, path.name, "inputs")
    outs = pair_tensors(list(own.outputs), list(source.outputs), names, path.name, "outputs")

    def tie(pairs):
        tied = []
        for f, s in pairs:
            perm = layout_fit(f, s)[0]
            tied.append(replace(f, source_name=s.name if s.name != f.name else None, source_perm=perm,
                                layout="NHWC" if perm and len(perm) == 4 else (s.layout if perm is None else None)))
        return tuple(tied)
    return IOSpec(tie(ins), tie(outs))


def _clean(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "_", name.split(":")[0]).removeprefix("serving_default_").lower()


def pair_tensors(file_tensors, source_tensors, names: dict[str, str], file: str, what: str):
    """[(file tensor, source tensor)] in the source's order; StageError when no pairing is certain."""
    if len(file_tensors) != len(source_tensors):
        raise StageError("export tflite", f"{file} has {len(file_tensors)} {what} where the source has "
                                          f"{len(source_tensors)}")
    for key in (lambda f: names.get(f.name, f.name), lambda f: f.name):
        lookup = {_clean(key(f)): f for f in file_tensors}
        if len(lookup) == len(file_tensors) and all(_clean(s.name) in lookup for s in source_tensors):
            return [(lookup[_clean(s.name)], s) for s in source_tensors]
    scores = [[_fit_score(f, s) for f in file_tensors] for s in source_tensors]
    best, tied = _best_assignment(scores)
    if best is None or tied:
        shown = ", ".join(f"{names.get(f.name, f.name)} {f.shape}" for f in file_tensors)
        wanted = ", ".join(f"{s.name} {s.shape}" for s in source_tensors)
        why = "no pairing fits every shape" if best is None else "more than one pairing fits the shapes equally"
        raise StageError("export tflite", f"cannot pair the {what} of {file} with the source's: {why} "
                                          f"(file: {shown}; source: {wanted}); give the outputs distinct names "
                                          "or shapes")
    return [(file_tensors[j], s) for s, j in zip(source_tensors, best)]


def _fit_score(f, s) -> int:
    if np.dtype(f.dtype).kind != np.dtype(s.dtype).kind and not (np.dtype(f.dtype).kind in "iu"
                                                                  and np.dtype(s.dtype).kind == "f"):
        return -1  # an int8-I/O file carries float tensors as integers
    try:
        return layout_fit(f, s)[1]
    except ValueError:
        return -1


def _best_assignment(scores: list[list[int]]) -> tuple[tuple[int, ...] | None, bool]:
    """The permutation with the highest total score (every pair must fit), and whether another ties it."""
    n = len(scores)
    if n > 8:
        return None, False
    best, best_total, tied = None, -1, False
    for perm in itertools.permutations(range(n)):
        if any(scores[i][j] < 0 for i, j in enumerate(perm)):
            continue
        total = sum(scores[i][j] for i, j in enumerate(perm))
        if total > best_total:
            best, best_total, tied = perm, total, False
        elif total == best_total:
            tied = True
    return best, tied


def _offline_samples(job: ExportJob, path: Path) -> str | None:
    """The build's calibration samples in NHWC, for onnx2tf to use instead of downloading images."""
    spec = job.model.iospec.inputs[0]
    if job.calibration is None or spec.name not in job.calibration.inputs:
        return None
    x = job.calibration.inputs[spec.name].astype(np.float32)
    if x.ndim == 4 and spec.layout == "NCHW":
        x = np.transpose(x, (0, 2, 3, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x)
    return str(path.resolve())
