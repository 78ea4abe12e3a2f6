"""What an exporter gets and what it returns."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import Split
from ..iospec import IOSpec
from ..model import Model


@dataclass(frozen=True)
class ExportJob:
    model: Model
    folder: Path  # the bundle's staging folder
    log: io.StringIO
    precisions: tuple[str, ...] = ("fp32",)
    reference_onnx: Path | None = None  # the fp32 reference graph, for formats converted from it
    calibration: Split | None = None
    produced: tuple["Exported", ...] = ()  # files earlier formats wrote (the C array embeds the .tflite)
    int8_io: bool = False  # integer TFLite files take and return int8 (for MCUs)


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    precision: str
    info: dict[str, Any] = field(default_factory=dict)
    mapping: IOSpec | None = None  # the file's IOSpec with source names/permutations, when they differ
