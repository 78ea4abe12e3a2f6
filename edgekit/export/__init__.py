"""Exporters, one module per format, registered by (format, source kind); the format table is
exporters/*.toml. Each takes an ExportJob and returns the fp32 file(s) it wrote as Exported entries;
quantized files come from the quantization passes (quantize/).
"""
from __future__ import annotations

from typing import Callable

from .c_array import export_c_array
from .executorch import REFUSAL as EXECUTORCH_REFUSAL
from .executorch import export_executorch
from .job import Exported, ExportJob, PassContext
from .keras_tflite import export_keras_onnx, export_keras_tflite
from .onnx import copy_onnx, export_onnx_torch
from .openvino import export_openvino
from .tflite import export_tflite_onnx2tf, export_tflite_torch

ANY = "*"
EXPORTERS: dict[tuple[str, str], Callable[[ExportJob], list[Exported]]] = {
    ("onnx", "torch"): export_onnx_torch,
    ("onnx", "onnx"): copy_onnx,
    ("onnx", "keras"): export_keras_onnx,
    ("tflite", "torch"): export_tflite_torch,
    ("tflite", "onnx"): export_tflite_onnx2tf,
    ("tflite", "keras"): export_keras_tflite,
    ("c_array", ANY): export_c_array,
    ("openvino", "torch"): export_openvino,
    ("openvino", "onnx"): export_openvino,
    ("openvino", "keras"): export_openvino,  # from the tf2onnx graph, when the ONNX format is made
    ("executorch", "torch"): export_executorch,
}
# (format, source kind) -> why that pair has no exporter (one line, said before anything runs)
REFUSALS: dict[tuple[str, str], str] = {
    ("executorch", "onnx"): EXECUTORCH_REFUSAL.format(kind="an ONNX"),
    ("executorch", "keras"): EXECUTORCH_REFUSAL.format(kind="a Keras"),
}


def exporter_for(fmt: str, kind: str) -> Callable[[ExportJob], list[Exported]] | None:
    return EXPORTERS.get((fmt, kind)) or EXPORTERS.get((fmt, ANY))


def formats_with_exporters() -> set[str]:
    return {fmt for fmt, _ in EXPORTERS}


__all__ = ["EXPORTERS", "REFUSALS", "ExportJob", "Exported", "PassContext", "exporter_for", "formats_with_exporters"]
