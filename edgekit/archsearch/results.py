"""What a study gives: the feasible Pareto front, its hypervolume, ``trials.csv``, ``pareto.json`` and
``pareto.png``.

The hypervolume is taken in the plane of (1 - metric, p90 / reference p90) against the reference point
(1 - reference metric, 1): the share of the box between a perfect instant model and the reference that
the front dominates. Optuna computes it (its WFG implementation); the reference point is fixed by the
caller (by default metric 0 and twice the p90 of the seeded hand-designed baseline), so fronts of different runs compare.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLUMNS = ("number", "state", "stage", "seed", "metric", "p90_ms", "p50_ms", "p99_ms", "bytes", "arena_bytes",
           "metric_fp32", "drop", "params", "resolution", "broke", "seconds", "pruned_reason", "failed_reason")


@dataclass(frozen=True)
class Point:
    number: int
    metric: float
    p90_ms: float
    params: dict
    attrs: dict

    def to_dict(self) -> dict:
        a = self.attrs
        return {"trial": self.number, "params": self.params, "metric": self.metric, "p90_ms": self.p90_ms,
                "n_params": a.get("params"),
                **{k: a.get(k) for k in ("p50_ms", "p99_ms", "bytes", "arena_bytes", "metric_fp32", "drop", "file",
                                         "precision", "runtime", "resolution", "seconds", "cpu", "seed")}}


def feasible(trial) -> bool:
    return (trial.state.name == "COMPLETE" and trial.values is not None
            and all(v <= 0 for v in (trial.user_attrs.get("constraints") or {"x": 1.0}).values()))


def points(trials) -> list[Point]:
    return [Point(t.number, float(t.values[0]), float(t.values[1]), dict(t.params), dict(t.user_attrs))
            for t in trials if feasible(t)]


def front(pts: list[Point]) -> list[Point]:
    """The non-dominated points (higher metric, lower p90), fastest first."""
    out = []
    for p in pts:
        dominated = any((q.metric >= p.metric and q.p90_ms <= p.p90_ms) and (q.metric > p.metric or q.p90_ms < p.p90_ms)
                        for q in pts)
        if not dominated:
            out.append(p)
    return sorted(out, key=lambda p: (p.p90_ms, -p.metric))


def hypervolume(pts: list[Point], reference: tuple[float, float]) -> float:
    """Dominated share of the box (metric 1, p90 0)..(reference metric, reference p90), from 0 to 1."""
    from optuna._hypervolume import compute_hypervolume

    ref_metric, ref_p90 = reference
    inside = [(1.0 - p.metric, p.p90_ms / ref_p90) for p in pts if p.metric > ref_metric and p.p90_ms < ref_p90]
    if not inside:
        return 0.0
    box = 1.0 - ref_metric
    return float(compute_hypervolume(np.array(inside), np.array([1.0 - ref_metric, 1.0]))) / box


def write_trials_csv(path: Path, trials) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # workers sharing a study write the same folder
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(list(COLUMNS) + sorted({k for t in trials for k in t.params}))
        keys = sorted({k for t in trials for k in t.params})
        for t in trials:
            a = t.user_attrs
            row = {"number": t.number, "state": t.state.name, "stage": a.get("stage", ""), "seed": a.get("seed", ""),
                   "metric": t.values[0] if t.values else "", "p90_ms": t.values[1] if t.values else "",
                   "broke": " ".join(a.get("broke", [])), **{k: a.get(k, "") for k in COLUMNS if k in a
                                                             and k not in ("broke", "seed", "stage")}}
            writer.writerow([_cell(row.get(c, "")) for c in COLUMNS] + [t.params.get(k, "") for k in keys])
    tmp.replace(path)


def _cell(value):
    return round(value, 6) if isinstance(value, float) else value


def write_pareto_json(path: Path, front_points: list[Point], summary: dict) -> None:
    from ..files.bundle import write_json

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write_json(tmp, {**summary, "front": [p.to_dict() for p in front_points]})
    tmp.replace(path)


def plot(path: Path, trials, front_points: list[Point], profile, title: str, promoted: list[dict] | None = None) -> None:
    """Metric against p90 (log axis): every measured trial, infeasible ones crossed, the baseline grid in its
    own colour, the front joined, the p90 budget and the accuracy floor (best - max drop) drawn; promoted
    members at their full-recipe figures, an arrow from their proxy point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if t.state.name == "COMPLETE" and t.values]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    groups = {"searched": ("tab:blue", "o"), "baseline grid": ("tab:orange", "s")}
    for label, (colour, marker) in groups.items():
        ok = [t for t in done if feasible(t) and (t.user_attrs.get("seed") == "grid") == (label != "searched")]
        bad = [t for t in done if not feasible(t) and (t.user_attrs.get("seed") == "grid") == (label != "searched")]
        ax.scatter([t.values[1] for t in ok], [t.values[0] for t in ok], c=colour, marker=marker, s=30,
                   label=f"{label} (feasible)", alpha=0.8)
        if bad:
            ax.scatter([t.values[1] for t in bad], [t.values[0] for t in bad], c=colour, marker="x", s=30,
                       label=f"{label} (breaks a budget)", alpha=0.6)
    if front_points:
        ax.plot([p.p90_ms for p in front_points], [p.metric for p in front_points], "-", c="tab:green", lw=2,
                label="Pareto front", zorder=1)
        ax.scatter([p.p90_ms for p in front_points], [p.metric for p in front_points], facecolors="none",
                   edgecolors="tab:green", s=120, lw=2, zorder=3)
        for p in front_points:
            ax.annotate(f"#{p.number}", (p.p90_ms, p.metric), textcoords="offset points", xytext=(6, -10), fontsize=8)
        floor = max(p.metric for p in front_points) - profile.budget.max_accuracy_drop
        ax.axhline(floor, ls="--", c="grey", lw=1, label=f"best - max drop ({profile.budget.max_accuracy_drop:g})")
    if profile.budget.p90_latency_ms:
        ax.axvline(profile.budget.p90_latency_ms, ls=":", c="tab:red", lw=1.5,
                   label=f"p90 budget {profile.budget.p90_latency_ms:g} ms")
    ax.set_xscale("log")
    if promoted:
        ax.scatter([p["final_p90_ms"] for p in promoted], [p["final_metric"] for p in promoted], marker="*", s=160,
                   c="tab:purple", label="promoted, full recipe", zorder=4)
        for p in promoted:
            ax.annotate("", (p["final_p90_ms"], p["final_metric"]), (p["proxy_p90_ms"], p["proxy_metric"]),
                        arrowprops={"arrowstyle": "->", "color": "tab:purple", "alpha": 0.5})
    metrics = [t.values[0] for t in done] + [p["final_metric"] for p in promoted or ()]
    if metrics and max(metrics) <= 1:
        low = min([p.metric for p in front_points] + [float(np.percentile(metrics, 10))])
        ax.set_ylim(max(0.0, low - 0.02), min(1.0, max(metrics) + 0.01))
    ax.set_xlabel("p90 latency of the quantized file, ms (log scale)")
    ax.set_ylabel("task metric of the quantized file in its runtime")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")  # one per process: workers share the folder
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def trials_summary(trials) -> dict:
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
    return by_state


def dump(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # whole or not at all, whichever worker wrote last
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
