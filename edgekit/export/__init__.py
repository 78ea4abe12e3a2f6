"""Exporters, one module per format, registered by format name (the table is exporters/*.toml)."""
from __future__ import annotations

from .onnx import export_onnx

EXPORTERS = {"onnx": export_onnx}
