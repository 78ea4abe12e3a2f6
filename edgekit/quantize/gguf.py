"""The LM quantization ladder for GGUF files: llama.cpp's types tried from the smallest file up until perplexity holds
(``generate.max_ppl_increase``), each judged in llama.cpp itself.

At 4 bits: Q4_K_M guided by the calibration text's importance matrix, then the same with the output (LM head) and
token embeddings at Q8_0, then Q5_K_M with the matrix (finer steps: 5 bits), then Q6_K, then Q8_0 (the ladder's
last rung: the file is then 8-bit and the record says so). At 8 bits: Q8_0; at 32: F32. The ladder stops at the
first rung within the budget (else ships the most accurate) and starts no rung after ``generate.time_box_s``.

The importance matrix is llama.cpp's (``llama-imatrix``'s quantity): for each weight matrix, the mean square of
each input column over the calibration windows' tokens, taken from the source in torch with a hook on each
Linear and named as llama.cpp names the tensor (``gguf``'s tensor-name map). The quantizer weighs each column's
rounding error by it.
"""
from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core.attempt import Attempt, mark_chosen, run_attempts
from ..core.errors import EdgekitError, StageError
from ..export.gguf import GgufOptions, quantize
from .lm_ladder import climb_notes, every_rung_failed, failed_rung, time_boxed

SEARCH = "gguf"


class Rung(NamedTuple):
    label: str
    options: GgufOptions


def rungs(bits: int) -> list[Rung]:
    if bits == 32:
        return [Rung("F32", GgufOptions("F32"))]
    if bits == 8:
        return [Rung("Q8_0", GgufOptions("Q8_0"))]
    ladder = [GgufOptions("Q4_K_M", imatrix=True),
              GgufOptions("Q4_K_M", imatrix=True, output_type="q8_0", embedding_type="q8_0"),
              GgufOptions("Q5_K_M", imatrix=True, output_type="q8_0", embedding_type="q8_0"),
              GgufOptions("Q6_K", imatrix=True),
              GgufOptions("Q8_0")]
    return [Rung(o.label + (" (the 4-bit ladder's last rung)" if o.type == "Q8_0" else ""), o) for o in ladder]


class Made(NamedTuple):
    path: Path
    options: GgufOptions


def importance_matrix(model, windows: np.ndarray, base: Path) -> dict[str, np.ndarray]:
    """llama.cpp's importance matrix of the source ``model`` (a causal-LM Model) on ``windows``: per weight tensor
    of the GGUF ``base``, the mean over tokens of each input column's square."""
    import gguf
    import torch

    from ..export.gguf import tensor_types
    from ..runtimes.llamacpp import GgufFacts

    facts = GgufFacts.read(base)
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(facts.architecture)
    if arch is None:
        raise StageError("quantize gguf", f"gguf {gguf.__name__} has no tensor names for {facts.architecture}")
    names = gguf.get_tensor_name_map(arch, facts.layers)
    present = set(tensor_types(base))
    module = model.module
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    hooks = []

    def hook(name: str):
        def pre(_mod, args):
            x = args[0].detach().to(torch.float32).reshape(-1, args[0].shape[-1])
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return pre

    for hf_name, sub in module.named_modules():
        if not isinstance(sub, torch.nn.Linear):
            continue
        target = names.get_name(f"{hf_name}.weight", try_suffixes=(".weight",))
        if target is None:
            continue
        if target not in present and target == "output.weight":  # tied: the LM head is the embedding matrix
            target = "token_embd.weight"
        if target in present:
            hooks.append(sub.register_forward_pre_hook(hook(target)))
    try:
        with torch.inference_mode():
            for window in np.asarray(windows):
                module(torch.as_tensor(window[None], dtype=torch.long))
    finally:
        for h in hooks:
            h.remove()
    return {name: (sums[name] / counts[name]).numpy() for name in sums}


def climb(model, base: Path, calibration: np.ndarray, scratch: Path, judge: Callable[[Path], object], bits: int,
          budget: float, threads: int, time_box_s: float, log: io.StringIO,
          progress: Callable[[str], None] | None = None) -> tuple[Attempt, tuple[Attempt, ...], list[str]]:
    """Quantize the F32 GGUF ``base`` rung by rung and judge each file (``judge``: its LmQualityFigures) until one
    is within ``budget``. Returns the chosen attempt (``made``: its file and options), every attempt and notes."""
    numbers = itertools.count()
    notes: list[str] = []
    ladder = rungs(bits)
    imatrix: dict[str, np.ndarray] | None = None

    def attempt(rung: Rung) -> Attempt:
        nonlocal imatrix
        if progress is not None:
            progress(f"quantize {SEARCH}: {rung.label}")
        began = time.perf_counter()
        at8 = tuple(n for n, t in (("output", rung.options.output_type), ("token_embd", rung.options.embedding_type))
                    if t == "q8_0")
        what = {"plan": rung.options.label, "measured_in": "llama.cpp", "int8_layers": at8}
        try:
            if rung.options.imatrix and imatrix is None:
                imatrix = importance_matrix(model, calibration, base)
                log.write(f"importance matrix: {len(imatrix)} tensors from {len(calibration)} calibration windows\n")
            path = scratch / f"attempt-{next(numbers)}.gguf"
            if rung.options.type == "F32":
                path.hardlink_to(base)
            else:
                quantize(base, path, rung.options, threads=threads, imatrix=imatrix, log=log)
            q = judge(path)
        except EdgekitError as exc:
            return failed_rung(SEARCH, rung.label, what, exc, began, log)
        return Attempt(SEARCH, rung.label, **what, drop=q.ppl_increase, decided_by="perplexity",
                       bytes=path.stat().st_size, seconds=time.perf_counter() - began,
                       figures={"perplexity": q.perplexity, "kl": q.kl, "top1_agreement": q.top1_agreement,
                                "precision": rung.options.precision},
                       made=(Made(path, rung.options), q))

    best, made = run_attempts(time_boxed(ladder, time_box_s, notes), attempt, budget, stage=f"quantize {SEARCH}",
                              tie_by_snr=False, why_failed=every_rung_failed)
    shipped = best.made[0].options
    notes += climb_notes(best, budget, ladder[0].options.precision, shipped.precision, shipped.type)
    return best, mark_chosen(made, best), notes
