"""Exporters, one module per format, registered by format name (the table is exporters/*.toml).

Each takes an ExportJob and returns the files it wrote as Exported entries. Formats run in the
order of this table: ONNX first (the reference graph), then TFLite (converted from it), then
the C array (which embeds the TFLite file).
"""
from __future__ import annotations

from .c_array import export_c_array
from .job import Exported, ExportJob
from .onnx import export_onnx_job
from .tflite import export_tflite

EXPORTERS = {"onnx": export_onnx_job, "tflite": export_tflite, "c_array": export_c_array}

__all__ = ["EXPORTERS", "ExportJob", "Exported"]
