"""The format table (exporters/*.toml): suffix, precisions, validating runtime, tolerances, and the
data the build plan is made from (order, what a format is converted from, precisions per bit width,
fallbacks, what a C array embeds).

One table drives the CLI's --formats, the exporters, the quantization passes and the report.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import lru_cache

from ..core.errors import UsageError, did_you_mean
from ..core.resources import data_dir


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
    order: int = 0  # formats run in this order (a format converted from another runs after it)
    converted_from: str = ""  # the format whose fp32 file this one is converted from ("" = from the source)
    bits: dict[int, tuple[str, ...]] = field(default_factory=dict)  # profile weight bits -> precisions besides fp32
    fallback: dict[str, str] = field(default_factory=dict)  # precision -> the one added when it misses the budget
    embeds: str = ""  # a container format (the C array): the format whose file it embeds
    embed_preference: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # importable modules the format's exporter, passes and runtime need
    extra: str = "tflite"  # the pip extra that installs ``requires``

    def tolerance_for(self, precision: str) -> Tolerance | None:
        """Element-wise tolerance; None for integer files, which the accuracy gate judges instead."""
        return self.tolerance.get(precision)

    def precisions_for(self, bits: int) -> tuple[str, ...]:
        return self.bits.get(bits, ())


_KEYS = {"name", "suffix", "runtime", "precisions", "description", "tolerance", "order", "converted_from", "bits",
         "fallback", "embeds", "embed_preference", "requires", "extra"}


@lru_cache(maxsize=1)
def format_table() -> dict[str, Format]:
    table = {}
    for path in sorted(data_dir("exporters").glob("*.toml")):
        raw = tomllib.loads(path.read_text())
        unknown = set(raw) - _KEYS
        if unknown:
            raise UsageError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
        tol = {p: Tolerance(float(t["atol"]), float(t["rtol"])) for p, t in raw.get("tolerance", {}).items()}
        bits = {int(b): tuple(ps) for b, ps in raw.get("bits", {}).items()}
        for ps in list(bits.values()) + [tuple(raw.get("fallback", {}).values())]:
            bad = [p for p in ps if p not in raw["precisions"]]
            if bad:
                raise UsageError(f"{path}: precision(s) {', '.join(bad)} are not in 'precisions'")
        table[raw["name"]] = Format(raw["name"], raw["suffix"], raw["runtime"], tuple(raw["precisions"]),
                                    raw.get("description", ""), tol, int(raw.get("order", 0)),
                                    raw.get("converted_from", ""), bits, dict(raw.get("fallback", {})),
                                    raw.get("embeds", ""), tuple(raw.get("embed_preference", ())),
                                    tuple(raw.get("requires", ())), raw.get("extra", "tflite"))
    return dict(sorted(table.items(), key=lambda item: item[1].order))


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
    from .profiles import LM_FORMATS

    for n in names:
        if n not in LM_FORMATS:  # a language model's formats are checked by its build
            get_format(n)
    return names
