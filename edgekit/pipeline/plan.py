"""The build plan, made and checked before anything runs: which formats, in which order, which
quantization passes each gets, and what the source kind allows. Format names live in the format
table (exporters/*.toml) and in the two registries: ``export.EXPORTERS`` and ``QUANTIZERS`` below."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable

from ..core.errors import UsageError
from ..export import REFUSALS, Exported, PassContext, exporter_for, formats_with_exporters
from ..targets.formats import Format, format_table, get_format
from ..core.model import Model
from ..targets.profiles import DeviceProfile
from ..quantize.passes import onnx_fp16, tflite_converted
from ..quantize.executorch import executorch_int8
from ..quantize.onnx import onnx_quantized
from ..quantize.openvino import openvino_bf16, openvino_fp16, openvino_int8
from ..quantize.tflite_int4 import tflite_int4
from ..quantize.tflite_int8 import tflite_int8
from ..files.tf_import import missing

Pass = Callable[[Exported, PassContext], Exported]

# (format, precision) -> the pass that makes that file from the format's fp32 file.
QUANTIZERS: dict[tuple[str, str], Pass] = {
    ("onnx", "fp16"): onnx_fp16,
    ("onnx", "int8"): onnx_quantized("int8"),
    ("onnx", "int4"): onnx_quantized("int4"),
    ("tflite", "fp16"): tflite_converted("fp16"),
    ("tflite", "int8"): tflite_int8,
    ("tflite", "int16x8"): tflite_converted("int16x8"),
    ("tflite", "int4"): tflite_int4,
    ("openvino", "bf16"): openvino_bf16,
    ("openvino", "fp16"): openvino_fp16,
    ("openvino", "int8"): openvino_int8,
    ("executorch", "int8"): executorch_int8,
}


@dataclass(frozen=True)
class Step:
    format: Format
    precisions: tuple[str, ...]  # quantization passes after the fp32 file, in order
    fallback: dict[str, str] = field(default_factory=dict)  # precision -> the pass added when it misses the budget


@dataclass(frozen=True)
class BuildPlan:
    steps: tuple[Step, ...]
    skipped: tuple[str, ...] = ()  # what was asked for and cannot run here, said in the report


def make_plan(source: Model, profile: DeviceProfile, wanted: tuple[str, ...], explicit: bool) -> BuildPlan:
    """The steps for ``wanted`` formats (``explicit``: named on the command line, so an impossible one is an
    error rather than a note). A format another is converted from is added, and runs first."""
    for name in wanted:
        get_format(name)
    if profile.qat.mode == "always" and source.kind != "torch" and profile.quantize.weight_bits in (4, 8):
        raise UsageError(f"{source.origin}: qat.mode = \"always\" needs a torch graph to train, and this is a "
                         f"{source.kind} source; give the torch model (FILE.py:FUNC --weights) or set qat.mode = "
                         "\"on-miss\"")
    unexported = [n for n in wanted if n not in formats_with_exporters()]
    if explicit and unexported:
        raise UsageError(f"--formats: no exporter for {', '.join(unexported)} yet")
    names, skipped = set(wanted) - set(unexported), []
    if source.kind == "keras" and "onnx" in names and importlib.util.find_spec("tf2onnx") is None:
        skipped.append("ONNX: not available for Keras sources here: tf2onnx is not installed "
                       "(pip install 'edgekit[tflite]')")
        names.discard("onnx")
    changed = True
    while changed:  # add what the wanted formats are converted from or embed
        changed = False
        for name in list(names):
            fmt = get_format(name)
            need = fmt.embeds or (fmt.converted_from if source.kind != "keras" else "")
            if need and need not in names:
                names.add(need)
                changed = True
    if source.kind != "keras":
        names.add(next(f.name for f in format_table().values() if not f.converted_from and not f.embeds))
    steps = []
    bits = profile.quantize.weight_bits
    for fmt in format_table().values():  # in table order
        if fmt.name not in names:
            continue
        absent = [m for m in fmt.requires if importlib.util.find_spec(m) is None]
        if absent and (explicit or fmt.extra == "tflite"):
            raise missing(f"the {fmt.name} format", ", ".join(absent), fmt.extra)
        if absent:  # an extra format the profile adds (server: OpenVINO) is a note without its extra
            skipped.append(f"{fmt.name}: not built: {', '.join(absent)} is not installed (pip install "
                           f"'edgekit[{fmt.extra}]')")
            continue
        refusal = REFUSALS.get((fmt.name, source.kind))
        if refusal is None and fmt.name == "executorch" and source.loader == "torchscript":
            refusal = REFUSALS[("executorch", "onnx")].replace("an ONNX", "a TorchScript")
        if refusal is not None:
            if explicit:
                raise UsageError(f"{source.origin}: {refusal}")
            skipped.append(f"{fmt.name}: not built: {refusal}")
            continue
        if exporter_for(fmt.name, source.kind) is None:
            raise UsageError(f"{source.origin}: no {fmt.name} exporter for {source.kind} sources")
        precisions = fmt.precisions_for(bits)
        for p in precisions + tuple(fmt.fallback.values()):
            if (fmt.name, p) not in QUANTIZERS:
                raise UsageError(f"format '{fmt.name}': no quantization pass for {p}; registered: "
                                 f"{', '.join(f'{f}/{q}' for f, q in QUANTIZERS)}")
        steps.append(Step(fmt, precisions, {p: fb for p, fb in fmt.fallback.items() if p in precisions}))
    return BuildPlan(tuple(steps), tuple(skipped))


def planned_files(plan: BuildPlan) -> dict[str, dict[str, str | None]]:
    """Format -> {precision the plan makes of it (fp32 first): the fallback that stands in for it}, for the
    ``formats`` gate."""
    return {step.format.name: {p: step.fallback.get(p) for p in ("fp32",) + step.precisions} for step in plan.steps}
