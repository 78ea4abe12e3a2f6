"""Judge an LM folder in its own runtime against the source: perplexity, KL and top-1 agreement on the validation
windows (logits from ONNX Runtime, llama.cpp, OpenVINO or ExecuTorch on the file), and greedy answers from the runtime's own
generator (onnxruntime-genai's, llama.cpp's, openvino-genai's, or ExecuTorch's program stepped token by token, with its KV
cache) against the source's greedy answers in torch.
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


def runner_for(path: Path, threads: int, *, all_logits: bool = False, context: int | None = None):
    """The runtime's runner for an LM file or folder: a GGUF file or folder (llama.cpp), a stateful OpenVINO IR
    folder (OpenVINO, openvino-genai), an ExecuTorch folder (model.pte), else ONNX Runtime GenAI."""
    path = Path(path)
    gguf = path if path.suffix == ".gguf" else path / "model.gguf"
    if gguf.is_file():
        from ..runtimes.llamacpp import LlamaRunner

        return LlamaRunner(gguf, threads=threads, all_logits=all_logits, context=context)
    from ..runtimes.openvino_lm import OvLmRunner, is_openvino_lm_folder

    if is_openvino_lm_folder(path):
        return OvLmRunner(path, threads=threads, context=context)
    from ..runtimes.executorch_lm import EtLmRunner, is_executorch_lm_folder

    if is_executorch_lm_folder(path):
        return EtLmRunner(path, threads=threads, context=context)
    from ..runtimes.genai import GenaiRunner

    return GenaiRunner(path, threads=threads)


def runtime_of(path: Path) -> str:
    """The runtime name an LM file or folder runs in (as ``runner_for`` picks it)."""
    from ..runtimes import executorch_lm, genai, llamacpp, openvino_lm

    path = Path(path)
    if path.suffix == ".gguf" or (path / "model.gguf").is_file():
        return llamacpp.RUNTIME
    if executorch_lm.is_executorch_lm_folder(path):
        return executorch_lm.RUNTIME
    return openvino_lm.RUNTIME if openvino_lm.is_openvino_lm_folder(path) else genai.RUNTIME


def quality(folder: Path, ref: LmReference, threads: int) -> LmQualityFigures:
    """The file's next-token quality on the reference's windows, in its own runtime (ONNX Runtime on a GenAI
    folder's model, llama.cpp on a GGUF file, OpenVINO on a stateful IR)."""
    runner = runner_for(folder, threads, all_logits=True, context=int(ref.windows.shape[1]))
    got = compare(reference_logits(ref.model, ref.windows), (runner.logits(w[None]) for w in ref.windows),
                  ref.windows)
    return LmQualityFigures(perplexity=got.perplexity, reference_perplexity=got.reference_perplexity,
                            ppl_increase=got.ppl_increase, kl=got.kl, top1_agreement=got.top1_agreement,
                            windows=got.windows, positions=got.positions)


def greedy_answers(folder: Path, ref: LmReference, threads: int) -> tuple[GreedyAnswer, ...]:
    """Each prompt answered greedily by the runtime's own generator (onnxruntime-genai's Generator, llama.cpp's
    decode loop; the source's EOS ids) beside the source's."""
    tokenizer = ref.model.meta["tokenizer"]  # type: ignore[attr-defined]
    longest = max((len(prompt_ids(tokenizer, a.prompt)) for a in ref.answers), default=0)
    runner = runner_for(folder, threads, context=longest + ref.greedy_tokens + 1)
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
