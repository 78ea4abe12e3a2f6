"""Feeding a file whose tensors differ from the source model's in name or layout (NCHW -> NHWC).

A runner built with a *mapping* (the file's IOSpec with ``source_name``/``source_perm``)
takes and returns the source model's tensors, so validation compares like with like.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .device_runner import dequantize_out, quantize_in  # noqa: F401  (one code path with the device)
from ..core.iospec import IOSpec, TensorSpec


def inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def source_view(file_spec: IOSpec) -> IOSpec:
    """The IOSpec a mapped runner presents: source names, source layout."""
    def back(t: TensorSpec) -> TensorSpec:
        shape = t.shape if t.source_perm is None else tuple(t.shape[i] for i in inverse(t.source_perm))
        layout = {"NHWC": "NCHW"}.get(t.layout, t.layout) if t.source_perm else t.layout
        return replace(t, name=t.source_name or t.name, shape=shape, layout=layout, source_name=None, source_perm=None)
    return IOSpec(tuple(map(back, file_spec.inputs)), tuple(map(back, file_spec.outputs)))


def to_file(t: TensorSpec, array: np.ndarray) -> np.ndarray:
    return array if t.source_perm is None else np.transpose(array, t.source_perm)


def to_source(t: TensorSpec, array: np.ndarray) -> np.ndarray:
    return array if t.source_perm is None else np.transpose(array, inverse(t.source_perm))
