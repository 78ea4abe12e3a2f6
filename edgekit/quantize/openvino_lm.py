"""The LM quantization ladder for OpenVINO folders: NNCF's weight compression tried from the smallest file up until
perplexity holds (``generate.max_ppl_increase``), each judged in the OpenVINO runtime.

At 4 bits: int4 asymmetric in groups of 128 (optimum-intel's int4 default; NNCF keeps the embeddings and the LM
head at int8), then groups of 64 (finer steps), then groups of 64 with AWQ and scale estimation on the calibration
text, then the same with the 20% most sensitive matrices (by the calibration text's Hessian input activation) at
int8, then int8 throughout (the ladder's last rung: the file is then 8-bit and the record says so). At 8 bits:
int8; at 16: fp16; at 32: fp32. The ladder stops at the first rung within the budget (else ships the most accurate)
and starts no rung after ``generate.time_box_s``.
"""
from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core.attempt import Attempt, mark_chosen, run_attempts
from ..export.openvino_lm import OvLmOptions, compress, weight_types
from .lm_ladder import climb_notes, every_rung_failed, judged, time_boxed

SEARCH = "openvino"


class Rung(NamedTuple):
    label: str
    options: OvLmOptions


def rungs(bits: int) -> list[Rung]:
    if bits in (32, 16):
        options = OvLmOptions(f"fp{bits}")
        return [Rung(options.label, options)]
    if bits == 8:
        return [Rung("int8_asym", OvLmOptions("int8_asym"))]
    ladder = [OvLmOptions("int4_asym", 128),
              OvLmOptions("int4_asym", 64),
              OvLmOptions("int4_asym", 64, awq=True, scale_estimation=True),
              OvLmOptions("int4_asym", 64, ratio=0.8, awq=True, scale_estimation=True),
              OvLmOptions("int8_asym")]
    return [Rung(o.label + (" (the 4-bit ladder's last rung)" if o.precision == "int8" else ""), o) for o in ladder]


class Made(NamedTuple):
    path: Path
    options: OvLmOptions


def climb(base: Path, calibration: np.ndarray, scratch: Path, judge: Callable[[Path], object], bits: int,
          budget: float, time_box_s: float, log: io.StringIO,
          progress: Callable[[str], None] | None = None) -> tuple[Attempt, tuple[Attempt, ...], list[str]]:
    """Compress the fp32 folder ``base`` rung by rung and judge each folder (``judge``: its LmQualityFigures) until
    one is within ``budget``. Returns the chosen attempt (``made``: its folder and options), every attempt, notes."""
    numbers = itertools.count()
    notes: list[str] = []
    ladder = rungs(bits)

    def attempt(rung: Rung) -> Attempt:
        if progress is not None:
            progress(f"quantize {SEARCH}: {rung.label}")

        def make():
            path = compress(base, scratch / f"attempt-{next(numbers)}", rung.options, calibration, log)
            return path, weight_types(path / "openvino_model.xml"), Made(path, rung.options)

        return judged(SEARCH, rung.label, rung.options.label, "OpenVINO", rung.options.precision, make, judge, log)

    best, made = run_attempts(time_boxed(ladder, time_box_s, notes), attempt, budget, stage=f"quantize {SEARCH}",
                              tie_by_snr=False, why_failed=every_rung_failed)
    shipped = best.made[0].options
    notes += climb_notes(best, budget, ladder[0].options.precision, shipped.precision, shipped.label)
    return best, mark_chosen(made, best), notes
