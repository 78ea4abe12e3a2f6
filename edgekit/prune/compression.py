"""The result of the compression search, and the pure helpers it is planned with."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.attempt import Attempt
from ..core.model import Model
from .layers import out_channels, weighted_layers


@dataclass(frozen=True)
class Compression:
    model: Model  # what the build exports: the compressed twin, or the source when nothing fit
    reference: Any  # validate.Reference, re-pointed at the twin's outputs, still measuring drops from the source
    applied: bool
    ratio: float
    before: dict[str, Any]  # the source's exported fp32 graph: params, MACs, bytes, zip bytes, latency
    attempts: tuple[Attempt, ...]  # every ratio tried, in order; the one applied is marked chosen
    details: dict[str, Any]  # the chosen attempt: layers changed, factorization, recovery, sharing
    settings: dict[str, Any]
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "ratio": self.ratio, "settings": self.settings, "before": self.before,
                "attempts": [a.to_dict() for a in self.attempts], "details": self.details, "notes": list(self.notes)}


def prunable(module, round_to: int, protect: set[str]) -> bool:
    """Whether any unprotected layer has channels left to prune (more than one)."""
    return any(out_channels(m) > 1 for n, m in weighted_layers(module).items() if n not in protect)


def grid(ceiling: float, step: float) -> list[float]:
    """Ratios from the ceiling down to 0 (inclusive), ``step`` apart."""
    out, k = [], 0
    while ceiling - k * step > 1e-9:
        out.append(round(ceiling - k * step, 4))
        k += 1
    return out + [0.0]
