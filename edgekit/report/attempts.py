"""The one renderer of a search's attempts (core/attempt.py) as a markdown table: a file's quantization
attempts in its section of report.md, the pruning back-off's in the compression section."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from ..core.attempt import Attempt

Cell = Callable[[Attempt], str]
# a column: its header, its cell, and its cell for a failed attempt (None: "-")
Column = tuple[str, Cell, Cell | None]


def _or_dash(value: Any, fmt: str = "") -> str:
    return "-" if value is None else format(value, fmt)


def _layers(names: tuple[str, ...]) -> str:
    return ", ".join(names) or "-"


QUANTIZATION: Sequence[Column] = (
    ("attempt", lambda a: a.label, lambda a: a.label),
    ("metric drop", lambda a: f"{a.drop:+.4f}", lambda a: f"failed: {a.error[:120]}"),
    ("output SNR dB", lambda a: _or_dash(a.snr_db, ".1f"), None),
    ("p50 ms", lambda a: _or_dash(a.p50_ms, ".3f"), None),  # OpenVINO/ExecuTorch/int4 TFLite: judged by accuracy
    ("bytes", lambda a: _or_dash(a.bytes), None),
    ("float layers", lambda a: _layers(a.float_layers), None),
    ("int8 layers", lambda a: _layers(a.int8_layers), None),
)

PRUNING: Sequence[Column] = (
    ("ratio", lambda a: f"{a.ratio:.2f}", lambda a: f"{a.ratio:.2f}"),
    ("params cut", lambda a: _or_dash(a.figures.get("ratio_reached"), ".0%"), None),
    ("drop", lambda a: f"{a.drop:+.4f}", None),
    ("decided by", lambda a: a.decided_by or "-", None),
    ("measured in", lambda a: a.measured_in, lambda a: f"{a.measured_in}: {a.error[:160]}"),
    ("params", lambda a: str(a.figures.get("params", a.figures.get("params_torch"))), None),
    ("MACs", lambda a: str(a.figures.get("macs", "-")), None),
    ("zip bytes", lambda a: str(a.figures.get("zip_bytes", "-")), None),
    ("passed", lambda a: "yes" if a.passed else "no", lambda a: "no"),
    ("seconds", lambda a: str(a.seconds), lambda a: str(a.seconds)),
)


def attempts_table(attempts: Iterable[Attempt], columns: Sequence[Column] = QUANTIZATION, indent: str = "") -> list[str]:
    """The markdown table of ``attempts``, one row each in the order they were made."""
    lines = [indent + "| " + " | ".join(c[0] for c in columns) + " |", indent + "|" + "---|" * len(columns)]
    for a in attempts:
        cells = [(failed or (lambda _: "-"))(a) if a.error else cell(a) for _, cell, failed in columns]
        lines.append(indent + "| " + " | ".join(cells) + " |")
    return lines


def file_attempts(attempts: Sequence[Attempt], chosen: str | None) -> list[str]:
    """A file's attempts in its section of report.md: the table under a list item, or nothing when its search
    made none."""
    if not attempts:
        return []
    return [f"- quantization attempts (chosen: {chosen}):", ""] + attempts_table(attempts, QUANTIZATION, "  ") + [""]
