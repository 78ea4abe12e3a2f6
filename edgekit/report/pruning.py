"""pruning.png: what pruning kept, layer by layer. Structured pruning: output channels kept against the
original per layer (bars, kept share printed); unstructured: the share of zero weights per layer. matplotlib's
object API with the Agg canvas (no pyplot state)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def pruning_rows(compression: Mapping[str, Any] | None) -> tuple[str, list[tuple[str, float, float]]]:
    """('structured', [(layer, channels before, after)]) or ('unstructured', [(layer, weights, sparsity)]);
    ('', []) when pruning did not change the model."""
    if not compression or not compression.get("applied"):
        return "", []
    details = compression.get("details") or {}
    layers = (details.get("structured") or {}).get("layers") or {}
    if layers:
        return "structured", [(name, float(s["before"][0]), float(s["after"][0])) for name, s in layers.items()]
    per_layer = (details.get("unstructured") or {}).get("per_layer") or {}
    if per_layer:
        return "unstructured", [(name, float(s["weights"]), float(s["sparsity"])) for name, s in per_layer.items()]
    return "", []


def write_pruning_plot(path: Path, compression: Mapping[str, Any] | None) -> str | None:
    """Draw pruning.png; returns its one-line description for report.md, or None (nothing pruned)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    kind, rows = pruning_rows(compression)
    if not rows:
        return None
    fig = Figure(figsize=(max(6.0, 0.32 * len(rows) + 2), 4.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = range(len(rows))
    names = [r[0] for r in rows]
    if kind == "structured":
        ax.bar(xs, [r[1] for r in rows], color="#c7c7c7", label="original output channels")
        ax.bar(xs, [r[2] for r in rows], color="#1f77b4", label="kept")
        for x, (_, before, after) in zip(xs, rows):
            ax.text(x, after, f"{after / before:.0%}" if before else "", ha="center", va="bottom", fontsize=6)
        ax.set_ylabel("output channels")
        kept = sum(r[2] for r in rows) / max(sum(r[1] for r in rows), 1)
        title = f"structured pruning: channels kept per layer ({kept:.0%} of the changed layers' channels)"
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.bar(xs, [100 * r[2] for r in rows], color="#ff7f0e")
        ax.set_ylim(0, 100)
        ax.set_ylabel("zero weights (%)")
        total = sum(r[1] * r[2] for r in rows) / max(sum(r[1] for r in rows), 1)
        title = f"unstructured pruning: sparsity per layer ({total:.0%} of the prunable weights are zero)"
    ax.set_title(title, fontsize=10)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=75, ha="right", fontsize=6)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return title + (" — layers the pruning left unchanged are not drawn" if kind == "structured" else "")
