"""The LM quantization ladder for ONNX Runtime GenAI folders: the builder's options tried from the smallest file
up until perplexity holds (``generate.max_ppl_increase``).

At 4 bits: int4 RTN with a zero point per block of 32 (asymmetric, as llama.cpp's Q4_1), then the same with the LM
head and the builder's sensitive "mixed" layers at int8, then that with blocks of 16, then int8 (the 4-bit
ladder's last rung: the file is then int8, and the record says so). At 8 bits: int8; at 32: fp32. Each rung is a
real export, judged by perplexity in ONNX Runtime; the ladder stops at the first rung within the budget (else
ships the most accurate one) and starts no rung after ``generate.time_box_s``.

Measured on SmolLM2-135M-Instruct (de-quantized from its Q4_1 GGUF, 8 x 256 tokens of held-out text, source
perplexity 33.40): the builder's default int4 (symmetric) +47.9%, k-quant +39.5% (and 5-8x slower to make), RTN
asymmetric +37.1%; with the LM head and mixed layers at int8 +11.1% (k-quant: +10.6%), at block 16 +11.1%; int8
+1.2%. Asymmetric int4 with the builder's default method writes a graph ONNX Runtime cannot load (tied embeddings).
"""
from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from ..core.attempt import Attempt, mark_chosen, run_attempts
from ..core.errors import EdgekitError
from ..export.genai import GenaiOptions, export_genai_with
from ..measure.lm_validate import LmReference, quality
from .lm_ladder import climb_notes, every_rung_failed, failed_rung, time_boxed

SEARCH = "onnxruntime-genai"


class Rung(NamedTuple):
    label: str
    options: GenaiOptions


def rungs(bits: int) -> list[Rung]:
    if bits == 32:
        return [Rung("fp32", GenaiOptions("fp32"))]
    if bits == 8:
        return [Rung("int8", GenaiOptions("int8"))]
    sensitive = ("lm_head", "mixed_layers")
    return [Rung("int4 RTN asymmetric, block 32", GenaiOptions("int4", block_size=32, algo="rtn", symmetric=False)),
            Rung("int4 RTN asymmetric, LM head + mixed layers int8, block 32",
                 GenaiOptions("int4", block_size=32, algo="rtn", symmetric=False, int8_layers=sensitive)),
            Rung("int4 RTN asymmetric, LM head + mixed layers int8, block 16",
                 GenaiOptions("int4", block_size=16, algo="rtn", symmetric=False, int8_layers=sensitive)),
            Rung("int8 (the 4-bit ladder's last rung)", GenaiOptions("int8"))]


class Made(NamedTuple):
    folder: Path
    options: GenaiOptions


def climb(hf_dir: Path, scratch: Path, ref: LmReference, bits: int, budget: float, threads: int,
          time_box_s: float, log: io.StringIO, progress: Callable[[str], None] | None = None
          ) -> tuple[Attempt, tuple[Attempt, ...], list[str]]:
    """Export and judge rungs until one is within ``budget``. Returns the chosen attempt (``made``: its folder and
    options), every attempt (the chosen one marked) and notes."""
    from ..runtimes.genai import folder_bytes

    numbers = itertools.count()
    notes: list[str] = []
    ladder = rungs(bits)

    def attempt(rung: Rung) -> Attempt:
        if progress is not None:
            progress(f"quantize {SEARCH}: {rung.label}")
        folder = scratch / f"attempt-{next(numbers)}"
        began = time.perf_counter()
        what = {"plan": " ".join(rung.options.builder_args()), "measured_in": "onnxruntime",
                "group_size": rung.options.block_size,
                "int8_layers": rung.options.layers_at_int8() if rung.options.precision == "int4" else ()}
        try:
            export_genai_with(hf_dir, folder, rung.options, log=log)
            q = quality(folder, ref, threads)
        except EdgekitError as exc:  # the builder failed, or wrote a model ONNX Runtime cannot load or run
            return failed_rung(SEARCH, rung.label, what, exc, began, log)
        return Attempt(SEARCH, rung.label, **what, drop=q.ppl_increase, decided_by="perplexity",
                       bytes=folder_bytes(folder), seconds=time.perf_counter() - began,
                       figures={"perplexity": q.perplexity, "kl": q.kl, "top1_agreement": q.top1_agreement,
                                "precision": rung.options.precision},
                       made=(Made(folder, rung.options), q))

    best, made = run_attempts(time_boxed(ladder, time_box_s, notes), attempt, budget, stage=f"quantize {SEARCH}",
                              tie_by_snr=False, why_failed=every_rung_failed)
    shipped = best.made[0].options.precision
    notes += climb_notes(best, budget, ladder[0].options.precision, shipped, shipped)
    return best, mark_chosen(made, best), notes
