"""Runs the source torch module (the reference every exported file is compared with), and the one
way edgekit sets torch's thread count and seeds its RNG without leaving the process changed."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import numpy as np

from ..core.iospec import IOSpec

# torch's intra-op thread count and its default RNG belong to the whole process. Every edgekit section
# that sets them holds this lock, so builds in other threads never run under each other's settings,
# and each section restores what it found.
_TORCH = threading.RLock()


@contextlib.contextmanager
def torch_threads(threads: int, seed: int | None = None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (and, with ``seed``, a forked, seeded RNG that
    is restored afterwards); the previous settings come back on exit."""
    import torch

    with _TORCH:
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, threads))
        try:
            if seed is None:
                yield
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    yield
        finally:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def caller_rng_kept() -> Iterator[None]:
    """Run the block (e.g. a user's factory, which may seed torch or draw initial weights) on a fork of
    torch's default RNG, so the caller's RNG state is the same afterwards."""
    import torch

    with _TORCH, torch.random.fork_rng(devices=[]):
        yield


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
        self.iospec = self.file_spec = iospec
        self.threads = threads

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch_threads(self.threads):
            args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.iospec.input_names]
            with torch.no_grad():
                outs = flatten_outputs(self.module(*args))
        return {name: t.detach().cpu().numpy() for name, t in zip(self.iospec.output_names, outs)}
