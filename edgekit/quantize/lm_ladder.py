"""What the LM quantization ladders (ONNX Runtime GenAI, GGUF, OpenVINO, ExecuTorch) share: the time box over their rungs, a failed rung
as an Attempt, and the notes on what the climb shipped."""
from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..core.attempt import Attempt
from ..core.errors import EdgekitError

R = TypeVar("R")


def time_boxed(ladder: Sequence[R], time_box_s: float, notes: list[str]) -> Iterator[R]:
    """The rungs in order; none starts after ``time_box_s`` (the first always does), and a note says so."""
    started = time.perf_counter()
    for number, rung in enumerate(ladder):
        if number and time.perf_counter() - started > time_box_s:
            notes.append(f"the ladder stopped after {number} of {len(ladder)} rungs: its time box "
                         f"({time_box_s:.0f} s) was spent")
            return
        yield rung


def failed_rung(search: str, label: str, what: dict, exc: Exception, began: float, log: io.StringIO) -> Attempt:
    log.write(f"LM attempt {label} failed: {exc}\n")
    reason = getattr(exc, "reason", None) or str(exc)
    return Attempt(search, label, **what, error=reason[:300], seconds=time.perf_counter() - began)


def judged(search: str, label: str, plan: str, measured_in: str, precision: str,
           make: Callable[[], tuple[Path, dict, Any]], judge: Callable[[Path], Any], log: io.StringIO) -> Attempt:
    """One rung of a folder-making ladder (OpenVINO, ExecuTorch): ``make`` returns the folder, its weight
    precisions and what the attempt carries; ``judge`` its LmQualityFigures. A tool's refusal is a failed rung."""
    from ..runtimes.genai import folder_bytes

    began = time.perf_counter()
    what = {"plan": plan, "measured_in": measured_in}
    try:
        path, weights, made = make()
        q = judge(path)
    except EdgekitError as exc:
        return failed_rung(search, label, what, exc, began, log)
    return Attempt(search, label, **what, drop=q.ppl_increase, decided_by="perplexity", bytes=folder_bytes(path),
                   seconds=time.perf_counter() - began,
                   figures={"perplexity": q.perplexity, "kl": q.kl, "top1_agreement": q.top1_agreement,
                            "precision": precision, "weights": weights},
                   made=(made, q))


def every_rung_failed(failed: list[Attempt]) -> str:
    return f"every rung failed ({len(failed)}); the first, {failed[0].label}: {failed[0].error[:240]}"


def climb_notes(best: Attempt, budget: float, first_precision: str, shipped_precision: str, shipped: str) -> list[str]:
    """Why the shipped rung is not the ladder's first: none was within the budget, or the file is wider."""
    notes = []
    if not best.passed:
        notes.append(f"no rung kept perplexity within +{budget:.1%}; shipped the most accurate, {best.label} "
                     f"(+{best.drop:.2%})")
    if shipped_precision != first_precision:
        notes.append(f"{first_precision} missed the perplexity budget (+{budget:.1%}) on every rung it tried; the "
                     f"file is {shipped}")
    return notes
