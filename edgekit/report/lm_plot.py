"""report.png of a language-model bundle: perplexity increase against decode tokens/s, one point per shipped file
(area = its bytes), the recommended file ringed, the profile's perplexity and decode budgets drawn as lines.
matplotlib's object API with the Agg canvas, as report/plot.py."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..core.lm_record import LmRecord
    from ..targets.profiles import Generate

COLORS = {"onnxruntime-genai": "#1f77b4", "llama.cpp": "#2ca02c"}


def write_lm_plot(path: Path, record: LmRecord, gen: Generate) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    timed = [f for f in record.files if f.bench is not None]
    fig = Figure(figsize=(8, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    largest = max((f.bytes for f in timed), default=1)
    for i, f in enumerate(timed):
        x, y = f.bench.decode_tokens_per_s, 100 * f.quality.ppl_increase  # type: ignore[union-attr]
        size = 60 + 900 * f.bytes / largest
        ax.scatter([x], [y], s=size, color=COLORS.get(f.runtime, "#7f7f7f"), alpha=0.55, edgecolors="none")
        if f.folder == record.recommended:
            ax.scatter([x], [y], s=size + 220, facecolors="none", edgecolors="#d62728", linewidths=2)
        ax.annotate(f"{f.folder}\n{f.bytes / 1e6:.1f} MB", (x, y), textcoords="offset points",
                    xytext=(10, 8 + 14 * (i % 3)), fontsize=7)
    ax.axhline(100 * gen.max_ppl_increase, color="#d62728", linestyle="--", linewidth=1,
               label=f"perplexity budget: +{gen.max_ppl_increase:.0%}")
    if gen.min_decode_tokens_per_s is not None:
        ax.axvline(gen.min_decode_tokens_per_s, color="#ff7f0e", linestyle="--", linewidth=1,
                   label=f"decode budget: {gen.min_decode_tokens_per_s:g} tokens/s")
    for runtime, color in COLORS.items():
        if any(f.runtime == runtime for f in timed):
            ax.scatter([], [], color=color, alpha=0.55, label=runtime)
    ax.scatter([], [], s=120, facecolors="none", edgecolors="#d62728", linewidths=2, label="recommended")
    ax.set_xlabel(f"decode tokens/s ({record.threads} thread(s))")
    ax.set_ylabel("perplexity increase over the source, %")
    ax.set_title(f"{record.source.name} for {record.profile}: perplexity vs decode speed (area = size)", fontsize=10)
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
