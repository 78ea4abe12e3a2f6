"""Runs the source torch module: the reference every exported file is compared with."""
from __future__ import annotations

import numpy as np

from ..iospec import IOSpec


def flatten_outputs(result, names: list[str] | None = None) -> list:
    """A module's return value as a flat list of tensors (tensor, tuple/list, or dict)."""
    if isinstance(result, dict):
        return list(result.values())
    if isinstance(result, (tuple, list)):
        flat = []
        for item in result:
            flat.extend(flatten_outputs(item))
        return flat
    return [result]


class TorchRunner:
    runtime = "torch"

    def __init__(self, module, iospec: IOSpec, threads: int = 1):
        self.module = module
        self.iospec = iospec
        self.threads = threads

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, self.threads))
        try:
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.iospec.input_names]
            with torch.no_grad():
                outs = flatten_outputs(self.module(*args))
        finally:
            torch.set_num_threads(previous)
        return {name: t.detach().cpu().numpy() for name, t in zip(self.iospec.output_names, outs)}
