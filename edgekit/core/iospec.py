"""IOSpec: name, shape (named dynamic axes), dtype and layout of every model input and output."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

Dim = int | str  # an int is a fixed size, a str names a dynamic axis


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name: float32, int64, ...
    layout: str | None = None  # NCHW, NHWC, or None where it has no meaning
    source_name: str | None = None  # the source model's tensor this one carries, when the name differs
    source_perm: tuple[int, ...] | None = None  # file tensor = source tensor.transpose(source_perm)

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The shape with the batch axis set to ``batch`` and other dynamic axes set to 1."""
        return tuple(batch if (i == 0 and isinstance(d, str)) else (1 if isinstance(d, str) else d)
                     for i, d in enumerate(self.shape))

    def matches_sample(self, sample_shape: tuple[int, ...]) -> bool:
        """Whether one sample (the shape without the batch axis) fits this spec."""
        if len(sample_shape) != len(self.shape) - 1:
            return False
        return all(isinstance(d, str) or d == s for d, s in zip(self.shape[1:], sample_shape))

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}
        if self.source_name is not None:
            out["source_name"] = self.source_name
        if self.source_perm is not None:
            out["source_perm"] = list(self.source_perm)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorSpec":
        perm = d.get("source_perm")
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d.get("layout"), d.get("source_name"),
                   tuple(perm) if perm is not None else None)


@dataclass(frozen=True)
class IOSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    @property
    def batch_dynamic(self) -> bool:
        return all(t.shape and isinstance(t.shape[0], str) for t in self.inputs)

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def with_layouts(self, layouts: dict[str, str | None]) -> "IOSpec":
        def fix(t: TensorSpec) -> TensorSpec:
            return replace(t, layout=layouts.get(t.name, t.layout))
        return IOSpec(tuple(map(fix, self.inputs)), tuple(map(fix, self.outputs)))

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IOSpec":
        return cls(tuple(map(TensorSpec.from_dict, d["inputs"])), tuple(map(TensorSpec.from_dict, d["outputs"])))


def default_layout(shape: tuple[Dim, ...], dtype: str) -> str | None:
    return "NCHW" if len(shape) == 4 and np.dtype(dtype).kind == "f" else None


def spec_from_array(name: str, array: np.ndarray, batch_axis: str = "batch") -> TensorSpec:
    """A spec from a batched example array: axis 0 becomes the named batch axis."""
    shape = (batch_axis,) + tuple(int(s) for s in array.shape[1:])
    dtype = str(array.dtype)
    return TensorSpec(name, shape, dtype, default_layout(shape, dtype))


def match_layout(file_spec: TensorSpec, source: TensorSpec) -> tuple[int, ...] | None:
    """The permutation that turns ``source`` into ``file_spec`` (None if identical, ValueError if none fits)."""
    return layout_fit(file_spec, source)[0]


def layout_fit(file_spec: TensorSpec, source: TensorSpec) -> tuple[tuple[int, ...] | None, int]:
    """The best-fitting permutation (identity or channels-last) and how many fixed axes it matches exactly.

    A dynamic axis fits any axis, so a dynamic map ``(batch, h, w, 2)`` "fits" ``(batch, 2, h, w)`` as is; the
    permutation that matches more fixed sizes wins (channels-last here: the 2 channels line up)."""
    if len(file_spec.shape) != len(source.shape):
        raise ValueError(f"'{file_spec.name}' has rank {len(file_spec.shape)}, source '{source.name}' rank {len(source.shape)}")

    def score(perm) -> int:
        pairs = [(f, source.shape[p]) for f, p in zip(file_spec.shape, perm)]
        if any(isinstance(f, int) and isinstance(g, int) and f != g for f, g in pairs):
            return -1
        return sum(isinstance(f, int) and isinstance(g, int) for f, g in pairs)

    rank = len(source.shape)
    identity = tuple(range(rank))
    perms = [identity] + ([(0, *range(2, rank), 1)] if rank >= 3 else [])
    nhwc = file_spec.layout == "NHWC" and source.layout == "NCHW"  # on a tie, what the file says it holds
    best = max(perms, key=lambda perm: (score(perm), (perm != identity) if nhwc else (perm == identity)))
    if score(best) < 0:
        raise ValueError(f"'{file_spec.name}' shape {file_spec.shape} does not fit source '{source.name}' {source.shape}")
    return (None if best == identity else best), score(best)


def synthetic_input(t: TensorSpec, batch: int = 1, seed: int = 0) -> np.ndarray:
    """A stand-in input: standard normal for floats, zeros for integers (valid token ids)."""
    shape = t.concrete_shape(batch)
    if np.dtype(t.dtype).kind == "f":
        return np.random.default_rng(seed).standard_normal(shape).astype(t.dtype)
    return np.zeros(shape, dtype=t.dtype)
