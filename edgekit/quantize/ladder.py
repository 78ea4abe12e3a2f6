"""The one repair ladder both formats climb when a quantized file misses the accuracy budget.

Layers come ranked worst first (by a format's own sensitivity measure). The ladder moves them up
one at a time, every layer at the first level before any at the next (int4 -> int8 -> float for
4-bit files, int8 -> float for 8-bit ones), each move on top of the previous ones. It stops at the
first attempt within the budget; when none is, it keeps the most accurate attempt seen. It is
time-boxed by ``quantize.repair_time_box_s``, counted from ``started`` (ranking included).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence


def climb(start: Any, ranked: Sequence[str], levels: Sequence[str], promote: Callable[[Any, str, str], Any],
          attempt: Callable[[Any, str], dict], budget: float, *, best: dict, started: float,
          time_box_s: float, name: Callable[[str], str] = str) -> tuple[dict, list[str]]:
    """Returns (the first attempt within ``budget``, or the lowest-drop one including ``best``; notes).

    ``promote(plan, layer, level)`` returns the plan with ``layer`` moved to ``level``;
    ``attempt(plan, label)`` makes, validates and records one file and returns a dict with 'drop'."""
    notes: list[str] = []
    plan = start
    for level in levels:
        for layer in ranked:
            if time.perf_counter() - started > time_box_s:
                notes.append(f"repair stopped at its {time_box_s:g} s time box")
                return best, notes + _gap(best, budget)
            plan = promote(plan, layer, level)
            entry = attempt(plan, f"repair: {name(layer)} -> {level}")
            if entry["drop"] < best["drop"]:
                best = entry
            if entry["drop"] <= budget:
                notes.append(f"repaired: {name(layer)} moved to {level}; drop {entry['drop']:.4f}")
                return entry, notes
    return best, notes + _gap(best, budget)


def _gap(best: dict, budget: float) -> list[str]:
    if best["drop"] <= budget:
        return []
    return [f"repair could not meet the budget: best drop {best['drop']:.4f} (gap {best['drop'] - budget:.4f})"]


def out_of_time(started: float, time_box_s: float) -> bool:
    return time.perf_counter() - started > time_box_s
