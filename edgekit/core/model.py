"""The Model product: a torch module (or an ONNX graph, or a Keras model) with its IOSpec and example inputs.

A domain type: it imports nothing internal but other domain types. The runner that computes a
model's own outputs is ``runtimes.reference_runner(model)``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .iospec import IOSpec


@dataclass(frozen=True)
class Model:
    name: str
    kind: str  # "torch", "onnx", "keras" or "causal-lm" (a transformers causal LM; meta holds its tokenizer)
    loader: str  # factory, torch.export, torchscript, pickle, onnx, example; hf-folder, gguf (causal-lm)
    origin: str  # what the user passed
    iospec: IOSpec
    example_inputs: dict[str, np.ndarray]  # batch of 1, keyed by input name
    module: Any = None  # torch.nn.Module in eval mode (kind == "torch")
    onnx_path: Path | None = None  # kind == "onnx"; for torch: its fp32 export, already made and checked
    meta: dict[str, Any] = field(default_factory=dict)  # labels, preprocessing, ...
