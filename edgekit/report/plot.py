"""report.png: accuracy drop against p90 latency, one point per timed file (area = file size),
recommended files ringed, the profile's budgets drawn as lines. matplotlib's object API with the
Agg canvas: no pyplot, so no process-wide figure state."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.record import BuildRecord

COLORS = {"onnxruntime": "#1f77b4", "litert": "#2ca02c", "tflm": "#9467bd"}


def write_plot(path: Path, record: BuildRecord) -> list[str]:
    """Draw the plot; returns the files left out of it (not timed on this host, e.g. the C array)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    budget = record.profile.budget
    recommended = {r.file for r in record.recommended}
    timed = [a for a in record.artifacts if a.bench is not None and a.validation is not None]
    left_out = [a.file for a in record.artifacts if a not in timed]
    fig = Figure(figsize=(8, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    largest = max((a.bytes for a in timed), default=1)
    for i, a in enumerate(sorted(timed, key=lambda a: a.bench.p90_ms)):
        x, y = a.bench.p90_ms, a.validation.drop
        size = 60 + 900 * a.bytes / largest
        ax.scatter([x], [y], s=size, color=COLORS.get(a.runtime, "#7f7f7f"), alpha=0.55, edgecolors="none")
        if a.file in recommended:
            ax.scatter([x], [y], s=size + 220, facecolors="none", edgecolors="#d62728", linewidths=2)
        ax.annotate(f"{a.file}\n{a.bytes / 1024:.0f} KB", (x, y), textcoords="offset points",
                    xytext=(10, 8 + 14 * (i % 3)),
                    fontsize=7)
    ax.axhline(budget.max_accuracy_drop, color="#d62728", linestyle="--", linewidth=1,
               label=f"accuracy budget: drop {budget.max_accuracy_drop:g}")
    if budget.p90_latency_ms is not None:
        ax.axvline(budget.p90_latency_ms, color="#ff7f0e", linestyle="--", linewidth=1,
                   label=f"p90 budget: {budget.p90_latency_ms:g} ms")
    for runtime, color in COLORS.items():
        if any(a.runtime == runtime for a in timed):
            ax.scatter([], [], color=color, alpha=0.55, label=runtime)
    ax.scatter([], [], s=120, facecolors="none", edgecolors="#d62728", linewidths=2, label="recommended")
    ax.set_xscale("log")
    ax.set_xlabel(f"p90 latency, ms (batch 1, {record.profile.target.threads or 'all'} thread(s), log scale)")
    ax.set_ylabel(f"{record.data.task} metric drop vs the source model")
    ax.set_title(f"{record.source.name} for {record.profile.name}: drop vs p90 (area = file size)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    if left_out:
        fig.text(0.01, 0.01, "not timed on this host: " + ", ".join(left_out), fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    return left_out
