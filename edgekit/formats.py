"""The format table (exporters/*.toml): suffix, precisions, validating runtime, tolerances.

One table drives the CLI's --formats, the exporters and the report.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache

from .errors import UsageError, did_you_mean
from .resources import data_dir


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str
    runtime: str
    precisions: tuple[str, ...]
    description: str
    tolerance: dict[str, Tolerance]

    def tolerance_for(self, precision: str) -> Tolerance | None:
        """Element-wise tolerance; None for integer files, which the accuracy gate judges instead."""
        return self.tolerance.get(precision)


_KEYS = {"name", "suffix", "runtime", "precisions", "description", "tolerance"}


@lru_cache(maxsize=1)
def format_table() -> dict[str, Format]:
    table = {}
    for path in sorted(data_dir("exporters").glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        unknown = set(raw) - _KEYS
        if unknown:
            raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        tol = {p: Tolerance(float(t["atol"]), float(t["rtol"])) for p, t in raw.get("tolerance", {}).items()}
        table[raw["name"]] = Format(raw["name"], raw["suffix"], raw["runtime"], tuple(raw["precisions"]),
                                    raw.get("description", ""), tol)
    return table


def get_format(name: str) -> Format:
    table = format_table()
    if name not in table:
        raise UsageError(f"unknown format '{name}'{did_you_mean(name, table)}; known formats: {', '.join(table)}")
    return table[name]


def parse_formats(text: str) -> tuple[str, ...]:
    """'onnx,tflite' -> ('onnx', 'tflite'), each checked against the table."""
    names = tuple(n.strip().lower() for n in text.split(",") if n.strip())
    if not names:
        raise UsageError(f"--formats {text!r} names no format; known formats: {', '.join(format_table())}")
    for n in names:
        get_format(n)
    return names
