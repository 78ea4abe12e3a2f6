"""The one repair ladder both formats climb when a quantized file misses the accuracy budget.

Layers come ranked worst first (by a format's own sensitivity measure). The ladder moves them up
one at a time, every layer at the first level before any at the next (int4 -> int8 -> float for
4-bit files, int8 -> float for 8-bit ones), each move on top of the previous ones. It runs its rungs
through the one attempt loop (core/attempt.py): it stops at the first attempt within the budget; when
none is, it keeps the most accurate attempt seen (the earlier one on the same drop). It is time-boxed
by ``quantize.repair_time_box_s``, counted from ``started`` (ranking included).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from ..core.attempt import Attempt, run_attempts


def climb(start: Any, ranked: Sequence[str], levels: Sequence[str], promote: Callable[[Any, str, str], Any],
          attempt: Callable[[Any, str], Attempt], budget: float, *, best: Attempt, started: float,
          time_box_s: float, name: Callable[[str], str] = str) -> tuple[Attempt, list[Attempt], list[str]]:
    """Returns (the first attempt within ``budget``, or the lowest-drop one including ``best``; the attempts
    made on the ladder, in order; notes).

    ``promote(plan, layer, level)`` returns the plan with ``layer`` moved to ``level``;
    ``attempt(plan, label)`` makes, validates and records one file as an Attempt (failed: ``error`` set)."""
    notes: list[str] = []
    moves: list[tuple[str, str]] = []

    def rungs():
        plan = start
        for level in levels:
            for layer in ranked:
                if out_of_time(started, time_box_s):
                    notes.append(f"repair stopped at its {time_box_s:g} s time box")
                    return
                plan = promote(plan, layer, level)
                moves.append((layer, level))
                yield plan, f"repair: {name(layer)} -> {level}"

    chosen, made = run_attempts(rungs(), lambda rung: attempt(*rung), budget, best=best, tie_by_snr=False,
                                stage="repair")
    if chosen is not best and chosen.passed:
        layer, level = moves[next(i for i, a in enumerate(made) if a is chosen)]
        return chosen, made, notes + [f"repaired: {name(layer)} moved to {level}; drop {chosen.drop:.4f}"]
    return chosen, made, notes + _gap(chosen, budget)


def _gap(best: Attempt, budget: float) -> list[str]:
    if best.drop <= budget:
        return []
    return [f"repair could not meet the budget: best drop {best.drop:.4f} (gap {best.drop - budget:.4f})"]


def out_of_time(started: float, time_box_s: float) -> bool:
    return time.perf_counter() - started > time_box_s
