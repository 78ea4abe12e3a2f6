"""Judge an LM folder in its own runtime against the source: perplexity, KL and top-1 agreement on the validation
windows (logits from ONNX Runtime on the folder's model), and greedy answers from the runtime's own generator
(onnxruntime-genai's, with its KV cache) against the source's greedy answers in torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.lm_record import GreedyAnswer, LmQualityFigures
from .lm_quality import Greedy, compare, compare_greedy, greedy, perplexity, prompt_ids, reference_logits


@dataclass(frozen=True)
class LmReference:
    """The source's side: its perplexity on the windows and its greedy answers to the prompts."""
    model: object  # the source Model (its torch module makes the reference logits again for each file)
    windows: np.ndarray
    perplexity: float
    answers: tuple[Greedy, ...]
    eos: tuple[int, ...]
    greedy_tokens: int


def make_reference(model, windows: np.ndarray, prompts: tuple[str, ...], greedy_tokens: int) -> LmReference:
    meta = model.meta
    eos = tuple(meta.get("eos_token_ids") or ())
    ppl = perplexity(reference_logits(model, windows), windows)
    answers = tuple(greedy(model, meta["tokenizer"], p, greedy_tokens, eos=eos or None) for p in prompts)
    return LmReference(model, np.asarray(windows, dtype=np.int64), ppl, answers, eos, greedy_tokens)


def quality(folder: Path, ref: LmReference, threads: int) -> LmQualityFigures:
    """The folder's next-token quality on the reference's windows (ONNX Runtime, the folder's own model)."""
    from ..runtimes.genai import GenaiRunner

    runner = GenaiRunner(folder, threads=threads)
    got = compare(reference_logits(ref.model, ref.windows), (runner.logits(w[None]) for w in ref.windows),
                  ref.windows)
    return LmQualityFigures(perplexity=got.perplexity, reference_perplexity=got.reference_perplexity,
                            ppl_increase=got.ppl_increase, kl=got.kl, top1_agreement=got.top1_agreement,
                            windows=got.windows, positions=got.positions)


def greedy_answers(folder: Path, ref: LmReference, threads: int) -> tuple[GreedyAnswer, ...]:
    """Each prompt answered by onnxruntime-genai's Generator (greedy, the source's EOS ids) beside the source's."""
    from ..runtimes.genai import GenaiRunner

    tokenizer = ref.model.meta["tokenizer"]  # type: ignore[attr-defined]
    runner = GenaiRunner(folder, threads=threads)
    out = []
    for want in ref.answers:
        ids = prompt_ids(tokenizer, want.prompt)
        tokens = runner.generate(ids, ref.greedy_tokens, greedy=True, eos_ids=ref.eos or None)
        stopped = bool(tokens) and tokens[-1] in set(ref.eos)
        got = Greedy(prompt=want.prompt, prompt_tokens=tuple(ids), tokens=tuple(tokens),
                     text=tokenizer.decode(tokens, skip_special_tokens=True), stopped=stopped)
        match = compare_greedy(want, got)
        out.append(GreedyAnswer(prompt=want.prompt, reference=want.text, answer=got.text, common_tokens=match.common,
                                reference_tokens=match.reference_length, answer_tokens=match.file_length,
                                identical=match.identical, stops_alike=match.stops_alike))
    return tuple(out)
