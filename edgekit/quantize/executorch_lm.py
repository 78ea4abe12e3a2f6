"""The LM quantization ladder for ExecuTorch folders: optimum-executorch's export with torchao's weight
quantization, tried from the smallest file up until perplexity holds (``generate.max_ppl_increase``), each judged in
ExecuTorch's runtime.

At 4 bits (8da4w: int8 dynamic activations, int4 weights, HQQ scales; embeddings int8 per row throughout, as
ExecuTorch's LLM examples ship them): groups of 128 (where 128 does not divide a layer's width, the largest power of
two that does), then 64, then 32 (finer steps), then groups of 32 with the LM head at 8da8w (the layer whose errors
reach the logits unfiltered), then 8da8w throughout (the ladder's last rung: the file is then 8-bit and the record
says so). At 8 bits: 8da8w; at 16: fp16; at 32: fp32. torchao has no calibrated method that ExecuTorch's XNNPACK
lowering takes for these layers (GPTQ and AWQ need its own tensor subclasses).

Each rung is a whole export, and ExecuTorch's lowering of a 135M model takes 8-10 minutes on two cores. So the
ladder first screens its rungs in torch: the model quantized as each rung asks (torchao's tensors run in eager
mode) on up to 8 calibration windows, never the validation windows. A rung whose screened perplexity rises past the
budget is not exported; it is listed with that figure. The ladder's last rung is never screened out, and the rungs
the screen passes are exported and judged in ExecuTorch as before: the screen only decides what is worth an export.
The ladder stops at the first rung within the budget (else ships the most accurate it exported) and starts no rung
after ``generate.time_box_s``.
"""
from __future__ import annotations

import io
import itertools
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..core.attempt import SCREEN, Attempt, mark_chosen, run_attempts
from ..export.executorch_lm import EtLmOptions, export, screen
from .lm_ladder import climb_notes, every_rung_failed, judged, time_boxed

SEARCH = "executorch"


class Rung(NamedTuple):
    label: str
    options: EtLmOptions


def rungs(bits: int) -> list[Rung]:
    if bits in (32, 16):
        options = EtLmOptions(f"fp{bits}", embedding="none")
        return [Rung(options.label, options)]
    if bits == 8:
        options = EtLmOptions("8da8w", 0)
        return [Rung(options.label, options)]
    ladder = [EtLmOptions("8da4w", 128), EtLmOptions("8da4w", 64), EtLmOptions("8da4w", 32),
              EtLmOptions("8da4w", 32, head="8da8w"), EtLmOptions("8da8w", 0)]
    return [Rung(o.label + (" (the 4-bit ladder's last rung)" if o.precision == "int8" else ""), o) for o in ladder]


class Made(NamedTuple):
    path: Path
    options: EtLmOptions
    report: dict


def climb(hf_dir: Path, max_seq_len: int, scratch: Path, judge: Callable[[Path], object], bits: int, budget: float,
          time_box_s: float, log: io.StringIO, progress: Callable[[str], None] | None = None,
          calibration=None) -> tuple[Attempt, tuple[Attempt, ...], list[str]]:
    """Screen the rungs in torch on ``calibration`` windows (when given), then export ``hf_dir`` rung by rung and
    judge each folder (``judge``: its LmQualityFigures) until one is within ``budget``. Returns the chosen attempt
    (``made``: its folder, options and the exporter's report), every attempt, notes."""
    from ..core.errors import StageError
    from ..export.executorch_lm import write_record

    numbers = itertools.count()
    notes: list[str] = []
    ladder = rungs(bits)
    forecast: dict[str, float] = {}
    if len(ladder) > 1 and calibration is not None and len(calibration):
        windows = calibration[:8]
        if progress is not None:
            progress(f"quantize {SEARCH}: screening {len(ladder) - 1} rungs in torch on {len(windows)} windows")
        try:
            forecast = dict(zip((r.label for r in ladder[:-1]),
                                screen(hf_dir, [r.options for r in ladder[:-1]], windows, log)))
        except StageError as exc:
            notes.append(f"the torch screen did not run ({exc.reason}); every rung was exported")

    def attempt(rung: Rung) -> Attempt:
        rise = forecast.get(rung.label)
        if rise is not None and rise > budget:
            return Attempt(SEARCH, rung.label, plan=rung.options.label, measured_in=SCREEN,
                           error=f"screened out in torch: {rise:+.2%} on the calibration windows (budget "
                                 f"+{budget:.1%}); not exported",
                           seconds=0.0, figures={"screen_ppl_increase": rise})
        if progress is not None:
            progress(f"quantize {SEARCH}: {rung.label}")

        def make():
            path, report = export(hf_dir, scratch / f"attempt-{next(numbers)}", rung.options, max_seq_len, log)
            write_record(path, rung.options, max_seq_len, report)
            return path, report.get("weights", {}), Made(path, rung.options, report)

        done = judged(SEARCH, rung.label, rung.options.label, "ExecuTorch", rung.options.precision, make, judge, log)
        if rise is not None:
            done = replace(done, figures={**done.figures, "screen_ppl_increase": rise})
        return done

    def why_failed(failed: list[Attempt]) -> str:  # the exports' own reasons, not the screen's
        exported = [a for a in failed if a.measured_in != SCREEN]
        return every_rung_failed(exported or failed)

    best, made = run_attempts(time_boxed(ladder, time_box_s, notes), attempt, budget, stage=f"quantize {SEARCH}",
                              tie_by_snr=False, why_failed=why_failed)
    shipped = best.made[0].options
    notes += climb_notes(best, budget, ladder[0].options.precision, shipped.precision, shipped.label)
    return best, mark_chosen(made, best), notes
