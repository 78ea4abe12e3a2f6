"""The one Runner protocol every runtime implements, and batching over a whole split."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ..core.errors import UsageError
from ..core.iospec import IOSpec


@runtime_checkable
class Runner(Protocol):
    """``run(inputs) -> outputs`` over one runtime, keyed by tensor name.

    ``iospec`` is what ``run`` takes and returns: the source model's tensors for a runner built with
    a mapping (names and NCHW layout restored), else the file's own. ``file_spec`` is the file's own
    tensors (names, layout, ``source_name``/``source_perm``): what a process that feeds the file
    directly, like the bench worker, must use.
    """
    runtime: str
    iospec: IOSpec
    file_spec: IOSpec
    threads: int

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def run_batched(runner: Runner, inputs: dict[str, np.ndarray], batch: int = 64) -> dict[str, np.ndarray]:
    """Run ``runner`` over a whole split; chunks when the batch axis is dynamic, else one by one. A runner
    on a device (``run_all``) takes the split in one round trip and chunks it there the same way."""
    if hasattr(runner, "run_all"):
        return runner.run_all(inputs, chunk=batch if runner.iospec.batch_dynamic else 1)
    n = len(next(iter(inputs.values())))
    step = batch if runner.iospec.batch_dynamic else 1
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, step):
        chunk = {k: v[start:start + step] for k, v in inputs.items()}
        for name, value in runner.run(chunk).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}


def token_window(window, limit: int, where: str) -> np.ndarray:
    """``window`` as an LM runner takes it: token ids of shape (1, s) with 1 <= s <= ``limit`` (``where`` names
    what holds ``limit`` tokens: "the context", "the program's static cache"); else a UsageError."""
    window = np.asarray(window)
    if window.ndim != 2 or window.shape[0] != 1 or window.shape[1] < 1:
        raise UsageError(f"a window is token ids of shape (1, s), got shape {window.shape}")
    if window.shape[1] > limit:
        raise UsageError(f"a window of {window.shape[1]} tokens does not fit {where} ({limit} tokens)")
    return window
