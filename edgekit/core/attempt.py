"""One attempt of a search, and the one loop the searches run their attempts through.

Every search records what it tried as ``Attempt``s: the ONNX Runtime arrangements and their repair, OpenVINO's
ignored scope, ExecuTorch's excluded modules, the int4 TFLite repair, the QAT rung and the pruning back-off. The
report renders them with one table (report/attempts.py); report.json holds ``Attempt.to_dict()`` for each.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterable, TypeVar

from .errors import StageError, UsageError, did_you_mean

WITHIN, OVER, FAILED = "within budget", "over budget", "failed"
VERDICTS = ("", WITHIN, OVER, FAILED)  # "": not judged against a budget yet

SCREEN = "torch (screen)"  # an attempt's measured_in when it was only forecast in torch and never made

@dataclass(frozen=True)
class Attempt:
    """What one attempt tried and what it gave. ``made`` is the search's own handle on the file it made (a path,
    a plan, its validation): never compared, never serialised."""
    search: str  # the search it belongs to: "onnx int8", "tflite int4", "openvino int8", "executorch int8", "prune"
    label: str  # e.g. "qdq-u8s8", "repair: fc1 -> float", "ratio 0.50"
    # what was tried
    float_layers: tuple[str, ...] = ()  # kept float: OpenVINO's ignored_scope, ExecuTorch's excluded modules too
    int8_layers: tuple[str, ...] = ()  # at int8 inside a 4-bit file
    group_size: int | None = None  # weights per quantization group; None: per channel
    ratio: float | None = None  # the pruning ratio asked
    weights: str = ""  # "ptq" or "qat" (the weights the quantizer was given); "" where it does not apply
    plan: str = ""  # the search's own one-line description of what was tried
    # what it gave
    drop: float | None = None  # None when the attempt failed
    decided_by: str = ""  # the output whose drop is the attempt's drop (ValidationResult.decided_by)
    snr_db: float | None = None  # the worst output's SNR against the reference
    measured_in: str = ""  # the runtime (and the file) it was judged in
    measured_on: str = "host"  # "host", or the device it ran on (ssh://user@host:port, adb:SERIAL)
    p50_ms: float | None = None  # None when it was not timed
    bytes: int | None = None
    seconds: float | None = None  # what the attempt took, where the search times it
    figures: dict[str, Any] = field(default_factory=dict)  # the search's own figures (pruning: params, MACs, ...)
    error: str = ""  # why it failed
    verdict: str = ""  # WITHIN, OVER or FAILED once judged against the budget
    chosen: bool = False  # the attempt the search shipped
    made: Any = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise UsageError(f"attempt verdict {self.verdict!r} is not one of {', '.join(map(repr, VERDICTS[1:]))}")

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.drop is None

    @property
    def passed(self) -> bool:
        return self.verdict == WITHIN

    def judged(self, budget: float) -> "Attempt":
        """This attempt with its verdict against ``budget`` (itself when the verdict is already that)."""
        verdict = FAILED if self.error or self.drop is None else WITHIN if self.drop <= budget else OVER
        return self if verdict == self.verdict else replace(self, verdict=verdict)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "made"}
        out.update(float_layers=list(self.float_layers), int8_layers=list(self.int8_layers), figures=dict(self.figures))
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Attempt":
        known = [f.name for f in fields(cls) if f.name != "made"]
        for key in d:
            if key not in known:
                raise UsageError(f"unknown attempt key {key!r}{did_you_mean(key, known)}")
        d = dict(d)
        for key in ("float_layers", "int8_layers"):
            if key in d:
                d[key] = tuple(d[key])
        if "figures" in d:
            d["figures"] = dict(d["figures"])
        return cls(**d)


def mark_chosen(attempts: Iterable[Attempt], chosen: Attempt) -> tuple[Attempt, ...]:
    """``attempts`` with ``chosen`` (the very object) marked as the one shipped."""
    return tuple(replace(a, chosen=True) if a is chosen else a for a in attempts)


def _drop(a: Attempt) -> float:
    return float("inf") if a.error or a.drop is None else a.drop


def _snr(a: Attempt) -> float:
    return float("-inf") if a.snr_db is None else a.snr_db


def more_accurate(a: Attempt, b: Attempt, tie_by_snr: bool = True) -> bool:
    """Whether ``a`` lost less than ``b``; on the same drop, the higher output SNR (with ``tie_by_snr``). A failed
    attempt is never more accurate; on a full tie ``b`` (the earlier one) stays."""
    return _drop(a) < _drop(b) or (tie_by_snr and _drop(a) == _drop(b) and _snr(a) > _snr(b))


C = TypeVar("C")


def _every_failed(attempts: list[Attempt]) -> str:
    first = attempts[0]
    return f"every attempt failed ({len(attempts)}); the first, {first.label}: {first.error[:240]}"


def run_attempts(candidates: Iterable[C], try_one: Callable[[C], Attempt], budget: float, *,
                 best: Attempt | None = None, stop_within: bool = True, tie_by_snr: bool = True, stage: str = "search",
                 why_failed: Callable[[list[Attempt]], str] = _every_failed) -> tuple[Attempt, list[Attempt]]:
    """The one attempt loop: ``try_one`` each candidate in order (a lazy iterable may end early, e.g. at a time
    box) and judge it against ``budget``. Stops at the first attempt within the budget (with ``stop_within``);
    otherwise keeps the most accurate (lowest drop, ties by output SNR unless ``tie_by_snr`` is off, then the
    earlier one), ``best`` (an attempt made before) included. Returns (that attempt, the attempts made here).

    ``try_one`` records a failure as an attempt with ``error`` set instead of raising; only when every attempt
    failed (and there is no ``best``) the loop raises StageError(``stage``, ``why_failed(attempts)``)."""
    seeded, made = best is not None, []
    for candidate in candidates:
        attempt = try_one(candidate).judged(budget)
        made.append(attempt)
        if best is None or more_accurate(attempt, best, tie_by_snr):
            best = attempt
        if stop_within and attempt.passed:
            return attempt, made
    if best is None or (not seeded and all(a.failed for a in made)):
        raise StageError(stage, why_failed(made) if made else "there was nothing to try")
    return best, made
