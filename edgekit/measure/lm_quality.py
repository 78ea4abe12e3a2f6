"""Quality of a language-model file against its source: the torch reference, perplexity, the relative increase over
the reference, KL divergence and top-1 agreement of the next-token distributions, and greedy generation.

Logits go window by window (an iterable of [context, vocab] arrays, or one [n, context, vocab] array): a 135M model's
vocabulary is 49,152 wide, so one 512-token window of logits is 100 MB and many are never held at once. Position t's
logits predict token t+1; a window of ``context`` tokens scores ``context - 1`` predictions.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core.errors import UsageError
from ..core.text import encode

CHUNK = 128  # positions per numpy step: bounds the float64 temporaries at CHUNK x vocab


@dataclass(frozen=True)
class LmQuality:
    perplexity: float  # the file's, on the validation windows
    reference_perplexity: float  # the source's (torch fp32), on the same windows
    ppl_increase: float  # perplexity / reference_perplexity - 1: the gated figure
    kl: float  # mean KL(reference || file) of the next-token distributions, nats per position
    top1_agreement: float  # fraction of positions where both predict the same next token
    windows: int
    positions: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Greedy:
    """One greedy generation: the prompt's ids (chat template applied where there is one) and the new tokens, EOS
    included when it stopped there."""
    prompt: str
    prompt_tokens: tuple[int, ...]
    tokens: tuple[int, ...]
    text: str
    stopped: bool  # ended at an EOS token, not at max_new


@dataclass(frozen=True)
class GreedyMatch:
    common: int  # new tokens before the first difference
    identical: bool
    reference_stopped: bool
    file_stopped: bool
    reference_length: int  # new tokens, EOS included
    file_length: int

    @property
    def stops_alike(self) -> bool:
        """The file stops (EOS) after as many tokens as the reference, or neither stops."""
        return self.reference_stopped == self.file_stopped and (
            not self.file_stopped or self.reference_length == self.file_length)


def _module(model):
    return getattr(model, "module", None) or model


def reference_logits(model, windows: np.ndarray) -> Iterator[np.ndarray]:
    """The source's fp32 logits, one [context, vocab] float32 array per window (computed as they are consumed)."""
    import torch

    module = _module(model)
    for window in np.asarray(windows, dtype=np.int64):
        with torch.no_grad():
            out = module(input_ids=torch.from_numpy(window[None].copy()), use_cache=False)
        yield out.logits[0].float().numpy()


def _windows(logits: Iterable[np.ndarray] | np.ndarray) -> Iterator[np.ndarray]:
    for item in logits:
        item = np.asarray(item)
        yield item[0] if item.ndim == 3 else item


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _check(logits: np.ndarray, window: np.ndarray, what: str) -> None:
    if logits.ndim != 2 or logits.shape[0] != len(window):
        raise ValueError(f"{what} logits have shape {logits.shape}; expected [{len(window)}, vocab] for the window")


def window_nll(logits: np.ndarray, window: np.ndarray) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of the window's tokens 1.. under ``logits`` [context, vocab], and
    their count."""
    _check(logits, window, "the")
    total = 0.0
    for i in range(0, len(window) - 1, CHUNK):
        j = min(i + CHUNK, len(window) - 1)
        logp = _log_softmax(logits[i:j])
        total -= float(logp[np.arange(j - i), window[i + 1:j + 1]].sum())
    return total, len(window) - 1


def perplexity(logits: Iterable[np.ndarray] | np.ndarray, windows: np.ndarray) -> float:
    """exp(mean next-token NLL) over every window's predicted positions."""
    total, count = 0.0, 0
    windows = np.asarray(windows, dtype=np.int64)
    seen = 0
    for window_logits, window in zip(_windows(logits), windows):
        nll, n = window_nll(window_logits, window)
        total, count, seen = total + nll, count + n, seen + 1
    if seen != len(windows):
        raise ValueError(f"logits for {seen} windows, {len(windows)} windows given")
    return math.exp(total / count) if count else float("nan")


def compare(ref_logits: Iterable[np.ndarray] | np.ndarray, file_logits: Iterable[np.ndarray] | np.ndarray,
            windows: np.ndarray) -> LmQuality:
    """The file's perplexity against the reference's on the same windows, with KL(ref || file) and top-1 agreement
    per predicted position."""
    windows = np.asarray(windows, dtype=np.int64)
    ref_nll = file_nll = kl = 0.0
    agree = count = seen = 0
    for ref, out, window in zip(_windows(ref_logits), _windows(file_logits), windows):
        _check(ref, window, "reference")
        _check(out, window, "file")
        if ref.shape != out.shape:
            raise ValueError(f"reference logits {ref.shape} and file logits {out.shape} differ in shape")
        for i in range(0, len(window) - 1, CHUNK):
            j = min(i + CHUNK, len(window) - 1)
            lp_ref, lp_out = _log_softmax(ref[i:j]), _log_softmax(out[i:j])
            rows, targets = np.arange(j - i), window[i + 1:j + 1]
            ref_nll -= float(lp_ref[rows, targets].sum())
            file_nll -= float(lp_out[rows, targets].sum())
            kl += float((np.exp(lp_ref) * (lp_ref - lp_out)).sum())
            agree += int((ref[i:j].argmax(-1) == out[i:j].argmax(-1)).sum())
            count += j - i
        seen += 1
    if seen != len(windows) or not count:
        raise ValueError(f"logits for {seen} windows, {len(windows)} windows given")
    ref_ppl, file_ppl = math.exp(ref_nll / count), math.exp(file_nll / count)
    return LmQuality(perplexity=file_ppl, reference_perplexity=ref_ppl, ppl_increase=file_ppl / ref_ppl - 1.0,
                     kl=max(0.0, kl / count), top1_agreement=agree / count, windows=seen, positions=count)


def prompt_ids(tokenizer, prompt: str, *, chat: bool = True) -> list[int]:
    """The prompt as the model sees it: under the chat template where the tokenizer has one (and ``chat``), else
    with the tokenizer's own special tokens (BOS where it adds one)."""
    if chat and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return encode(tokenizer, text)
    out = tokenizer.encode(prompt)
    return [int(i) for i in getattr(out, "ids", out)]


def greedy(model, tokenizer, prompt: str, max_new: int, *, chat: bool = True,
           eos: Iterable[int] | None = None, context: int | None = None) -> Greedy:
    """Greedy decoding (argmax, KV cache) of up to ``max_new`` tokens from ``model`` (a Model or a transformers
    causal LM); it stops at the first EOS (the model's EOS ids, or ``eos``)."""
    import torch

    from ..sources.lm import eos_ids

    meta = getattr(model, "meta", {}) or {}
    tokenizer = tokenizer if tokenizer is not None else meta.get("tokenizer")
    module = _module(model)
    stop = set(eos if eos is not None else meta.get("eos_token_ids") or eos_ids(module, tokenizer))
    context = context or meta.get("context_length") or getattr(module.config, "max_position_embeddings", None)
    ids = prompt_ids(tokenizer, prompt, chat=chat)
    if context and len(ids) >= context:
        raise UsageError(f"prompt '{prompt[:40]}...' has {len(ids)} tokens, the context is {context}; shorten it "
                         "or raise the context")
    budget = min(max_new, context - len(ids)) if context else max_new
    new: list[int] = []
    stopped = False
    cache_arg = _cache_argument(module)
    with torch.no_grad():
        out = module(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=True)
        for _ in range(budget):
            token = int(out.logits[0, -1].argmax())
            new.append(token)
            if token in stop:
                stopped = True
                break
            if len(new) == budget:
                break
            cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
            out = module(input_ids=torch.tensor([[token]], dtype=torch.long), use_cache=True, **{cache_arg: cache})
    text = tokenizer.decode(new, skip_special_tokens=True)
    return Greedy(prompt=prompt, prompt_tokens=tuple(ids), tokens=tuple(new), text=text, stopped=stopped)


def _cache_argument(module) -> str:
    """The forward argument that takes the KV cache: ``cache`` (transformers >= 5.25), else ``past_key_values``."""
    import inspect

    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def compare_greedy(reference: Greedy, other: Greedy) -> GreedyMatch:
    """How far two greedy outputs for the same prompt agree, and whether each stopped at EOS."""
    common = 0
    for a, b in zip(reference.tokens, other.tokens):
        if a != b:
            break
        common += 1
    identical = reference.tokens == other.tokens
    return GreedyMatch(common=common, identical=identical, reference_stopped=reference.stopped,
                       file_stopped=other.stopped, reference_length=len(reference.tokens),
                       file_length=len(other.tokens))
