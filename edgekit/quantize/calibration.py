"""Calibration data for ONNX Runtime's quantizer, from the data's calibration split."""
from __future__ import annotations

import numpy as np

from ..core.data import Split


class SplitReader:
    """An onnxruntime CalibrationDataReader over a Split (batch 1: safe for fixed-batch graphs)."""

    def __init__(self, split: Split, names: list[str]):
        self.split, self.names = split, names
        self.rewind()

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        n = len(self.split)
        self._it = iter([{k: np.ascontiguousarray(self.split.inputs[k][i:i + 1]) for k in self.names} for i in range(n)])

    def __iter__(self):
        self.rewind()
        return self._it

    def __len__(self) -> int:
        return len(self.split)
