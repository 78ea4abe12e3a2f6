"""Shared batching for runners."""
from __future__ import annotations

import numpy as np


def run_batched(runner, inputs: dict[str, np.ndarray], batch: int = 64) -> dict[str, np.ndarray]:
    """Run ``runner`` over a whole split; chunks when the batch axis is dynamic, else one by one."""
    n = len(next(iter(inputs.values())))
    step = batch if runner.iospec.batch_dynamic else 1
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, step):
        chunk = {k: v[start:start + step] for k, v in inputs.items()}
        for name, value in runner.run(chunk).items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {k: np.concatenate(v, axis=0) for k, v in parts.items()}
