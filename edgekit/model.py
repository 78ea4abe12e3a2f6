"""The Model product: a torch module (or an ONNX graph) with its IOSpec and example inputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .iospec import IOSpec


@dataclass(frozen=True)
class Model:
    name: str
    kind: str  # "torch", "onnx" or "keras"
    loader: str  # factory, torch.export, torchscript, pickle, onnx, example
    origin: str  # what the user passed
    iospec: IOSpec
    example_inputs: dict[str, np.ndarray]  # batch of 1, keyed by input name
    module: Any = None  # torch.nn.Module in eval mode (kind == "torch")
    onnx_path: Path | None = None  # kind == "onnx"; for torch: its fp32 export, already made and checked
    meta: dict[str, Any] = field(default_factory=dict)  # labels, preprocessing, ...

    def reference_runner(self, threads: int = 1):
        """A runner that computes the source model's own outputs."""
        if self.kind == "torch":
            from .runtimes.torch_runner import TorchRunner
            return TorchRunner(self.module, self.iospec, threads)
        if self.kind == "keras":
            from .sources_keras import KerasRunner
            return KerasRunner(self)
        from .runtimes.ort import OrtRunner
        return OrtRunner(self.onnx_path, threads=threads)
