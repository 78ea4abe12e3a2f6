"""Per-layer sensitivity, measured: quantize one layer alone and compare the graph's outputs with
the float graph's on calibration data (output SNR in dB; lower means more sensitive).

Weight or activation SNR alone misses the classic failure: one outlier weight per channel sets the
scale and every other weight of that channel rounds to zero, yet the outlier's energy keeps the
layer's own SNR high. The end-to-end output shows it.
"""
from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.data import Split
from ..runtimes.base import run_batched
from ..runtimes.ort import OrtRunner


def rank_layers(pre: Path, plan, calibration: Split, tmp: Path, nodes: list[str],
                seconds: float = 60.0, limit: int = 128) -> list[tuple[str, float]]:
    """``nodes`` ranked worst first by the output SNR when each is the only quantized layer."""
    from .onnx_ort import quantize_onnx

    sub = Split({k: v[:limit] for k, v in calibration.inputs.items()})
    want = run_batched(OrtRunner(pre), sub.inputs)
    deadline = time.perf_counter() + seconds
    scores = []
    for i, node in enumerate(nodes):
        if time.perf_counter() > deadline:
            break
        path = tmp / f"sens{i}.onnx"
        quantize_onnx(pre, path, sub, replace(plan, only_nodes=frozenset({node}), float_nodes=frozenset(),
                                               int8_nodes=frozenset()))
        got = run_batched(OrtRunner(path), sub.inputs)
        scores.append((node, min(_snr_db(want[k], got[k]) for k in want)))
    return sorted(scores, key=lambda item: item[1])


def _snr_db(reference, noisy) -> float:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    noise = float(np.sum((ref - np.asarray(noisy, dtype=np.float64).ravel()) ** 2))
    return float("inf") if noise == 0 else 10 * math.log10(max(float(np.sum(ref ** 2)), 1e-30) / noise)
