"""Promotion: train the best front members with the full recipe, re-measure them, rank proxy against final,
pick one, and build it into a normal bundle with ``edgekit build``'s own pipeline."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from .results import Point, front
from .space import candidate
from .study import Loop, constraint_values
from .trainer import Recipe, fit, resized

PICKS = ("best", "fastest", "smallest")


@dataclass
class Promoted:
    trial: int
    params: dict
    proxy_metric: float
    proxy_p90_ms: float
    final: dict  # the re-measured figures (Measured.attrs())
    constraints: dict
    module: object = None
    resolution: int | None = None

    @property
    def feasible(self) -> bool:
        return all(v <= 0 for v in self.constraints.values())

    def to_dict(self) -> dict:
        return {"trial": self.trial, "params": self.params, "proxy_metric": self.proxy_metric,
                "proxy_p90_ms": self.proxy_p90_ms, "final_metric": self.final["metric"],
                "final_p90_ms": self.final["p90_ms"], "final": self.final, "constraints": self.constraints,
                "feasible": self.feasible, "resolution": self.resolution}


def spread(members: list[Point], k: int) -> list[Point]:
    """``k`` front members spread along it by latency, the most accurate always among them (a user picks a
    trade-off from their final figures): evenly spaced ranks of the front sorted by p90, most accurate first."""
    ranked = sorted(members, key=lambda p: (p.p90_ms, -p.metric))
    if k <= 0:
        return []
    if len(ranked) > k:
        picks = {len(ranked) - 1} | {int(round(i)) for i in np.linspace(0, len(ranked) - 1, k)}
        for i in range(len(ranked) - 1, -1, -1):  # ties of rounding: fill with the next most accurate
            if len(picks) >= k:
                break
            picks.add(i)
        ranked = [ranked[i] for i in sorted(picks)][-k:] if len(picks) > k else [ranked[i] for i in sorted(picks)]
    return sorted(ranked, key=lambda p: (-p.metric, p.p90_ms))


def to_promote(pts: list[Point], k: int) -> list[Point]:
    """``k`` members to train with the full recipe: spread along the front; when the front holds fewer than
    ``k``, the next non-dominated layers (as NSGA-II ranks trials) fill up, each spread the same way. A rank
    correlation over 3 members is 1, 0.5, -0.5 or -1: one swap of two near-tied members halves it."""
    chosen, rest = [], list(pts)
    while len(chosen) < k and rest:
        layer = front(rest)
        chosen += spread(layer, k - len(chosen))
        taken = {p.number for p in layer}
        rest = [p for p in rest if p.number not in taken]
    return sorted(chosen, key=lambda p: (-p.metric, p.p90_ms))


def promote(loop: Loop, members: list[Point], final: Recipe, *, progress=None) -> list[Promoted]:
    out = []
    for i, p in enumerate(members):
        if progress:
            progress({"event": "promote", "trial": p.number, "index": i, "of": len(members)})
        module, resolution = candidate(loop.space, p.params, loop.seed)
        arrays = resized(loop.arrays, resolution)
        fit(module, arrays, loop.input_names, loop.task, final, seed=loop.seed, threads=loop.train_threads,
            guard=loop.lock.train)
        with loop.lock.bench():
            m = loop.evaluator.measure(module, arrays, f"t{p.number}-final")
        out.append(Promoted(p.number, p.params, p.metric, p.p90_ms, m.attrs(),
                            constraint_values(m, loop.evaluator.profile), module, resolution))
    return out


def spearman(promoted: list[Promoted]) -> float | None:
    """Rank correlation of the proxy metric with the final one; None with fewer than 3 members or ties only."""
    if len(promoted) < 3:
        return None
    from scipy.stats import spearmanr

    with np.errstate(invalid="ignore"), contextlib.suppress(Warning):
        rho = spearmanr([p.proxy_metric for p in promoted], [p.final["metric"] for p in promoted]).statistic
    return None if rho is None or not np.isfinite(rho) else round(float(rho), 4)


def choose(promoted: list[Promoted], pick: str) -> Promoted | None:
    """``best``: the most accurate member within every budget; ``fastest``/``smallest``: the lowest p90 /
    fewest bytes among those; a trial number: that member. None when no member holds every budget."""
    if pick not in PICKS:
        number = int(pick)
        hit = next((p for p in promoted if p.trial == number), None)
        if hit is None:
            raise UsageError(f"--pick {pick}: trial {number} was not promoted (promoted: "
                             f"{', '.join(str(p.trial) for p in promoted) or 'none'})")
        return hit
    ok = [p for p in promoted if p.feasible]
    if not ok:
        return None
    if pick == "fastest":
        return min(ok, key=lambda p: (p.final["p90_ms"], -p.final["metric"]))
    if pick == "smallest":
        return min(ok, key=lambda p: (p.final["bytes"], -p.final["metric"]))
    return max(ok, key=lambda p: (p.final["metric"], -p.final["p90_ms"]))


def resize_steps(steps: list, arrays: dict, before: dict) -> list:
    """The recipe's steps plus the resize ``trainer.resized`` applied (bilinear, antialiased when smaller)."""
    image = next((k for k, v in arrays.items() if v.ndim == 4 and not k.endswith("_train")), None)
    if image is None or arrays[image].shape[2:] == before[image].shape[2:]:
        return list(steps)
    height, width = arrays[image].shape[2:]
    return list(steps) + [{"op": "resize", "height": int(height), "width": int(width), "method": "bilinear",
                           "align_corners": False, "antialias": bool(height < before[image].shape[2])}]


def build_bundle(chosen: Promoted, loop: Loop, folder: Path, study_name: str, meta: dict, *, progress=None):
    """The chosen member through ``edgekit build``: pruned, quantized, exported, validated and gated with the
    profile as it is. Its data (resized to its resolution) is saved beside the bundle for later rebuilds."""
    from ..pipeline.build import build
    from ..sources.load import torch_model

    arrays = resized(loop.arrays, chosen.resolution)
    data_file = folder / f"data-{chosen.resolution or 'native'}.npz"
    np.savez_compressed(data_file, **arrays)
    pre = dict(meta.get("preprocessing") or {})
    if pre and chosen.resolution:
        pre["steps"] = resize_steps(pre.get("steps", []), arrays, loop.arrays)
    model = torch_model(chosen.module, name=f"nas_{study_name}_t{chosen.trial}".replace("-", "_"), loader="nas",
                        origin=f"edgekit nas study {study_name}, trial {chosen.trial}",
                        sample_inputs={k: v for k, v in arrays.items() if not k.endswith("_train")},
                        meta={**meta, "preprocessing": pre or None,
                              "nas": {"study": study_name, "trial": chosen.trial, "params": chosen.params}})
    return build(model, profile=loop.evaluator.profile, data=data_file, out=folder, force=True,
                 progress=(lambda stage: progress({"event": "build", "stage": stage})) if progress else None)
