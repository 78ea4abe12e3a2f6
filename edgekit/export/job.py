"""What an exporter or a quantization pass gets, and what it returns."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.data import Data, Split
from ..core.iospec import IOSpec
from ..core.model import Model
from ..targets.profiles import DeviceProfile
from ..core.results import ExportInfo, ValidationResult


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    precision: str
    info: ExportInfo
    mapping: IOSpec | None = None  # the file's IOSpec with source names/permutations, when they differ
    saved_model: Path | None = None  # TFLite: the SavedModel it came from, which quantization passes convert
    validation: ValidationResult | None = None  # set when a search already validated this very file


@dataclass(frozen=True)
class ExportJob:
    model: Model
    folder: Path  # the bundle's staging folder
    scratch: Path  # the build's scratch folder (SavedModels and other intermediates live here)
    log: io.StringIO
    tf: Any = None  # the build's converter worker (export.tf_client.TfWorker)
    reference_onnx: Path | None = None  # the fp32 reference graph, for formats converted from it
    calibration: Split | None = None
    produced: tuple[Exported, ...] = ()  # files earlier formats wrote (the C array embeds a .tflite)
    missed_budget: frozenset[str] = frozenset()  # files among ``produced`` that missed the accuracy budget
    min_delegated_share: float = 0.9  # ExecuTorch: a program with less of its ops on XNNPACK is refused


@dataclass(frozen=True)
class PassContext:
    """Everything a quantization pass ``Exported -> Exported`` may use."""
    folder: Path
    scratch: Path
    name: str  # the model's name: files are <name>_<precision><suffix>
    iospec: IOSpec  # the source model's
    log: io.StringIO
    tf: Any  # the converter worker
    data: Data
    reference: Any  # validate.Reference: the outputs and metrics a file is judged against
    profile: DeviceProfile
    float_p50_ms: float | None = None  # the fp32 twin's measured p50, for the latency check
    options: dict[str, Any] = field(default_factory=dict)  # int8_io, fp16_io
    model: Model | None = None  # the model the files are made from (quantization-aware training fine-tunes it)
    teacher: Any = None  # the source's torch module before pruning: QAT distils from it
