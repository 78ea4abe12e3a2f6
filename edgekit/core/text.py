"""Text data for language models: read a .txt/.jsonl file (or the built-in text) and split it, seeded and without
overlap, into calibration windows, validation windows and generation prompts.

A domain module: it imports only ``core``. The tokenizer is any object with ``encode(text)`` that returns a list of
ids (a transformers tokenizer) or an object with ``.ids`` (a ``tokenizers.Tokenizer``); ``eos_token_id``, when it
has one, separates documents in the token stream.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError

TEXT_SUFFIXES = (".txt", ".text", ".md")
BUILTIN_PARTS = ("all", "train", "heldout")
HELDOUT_EVERY = 5  # the built-in text's held-out part: every 5th paragraph, counted across all topics


@dataclass(frozen=True)
class Text:
    """Documents (for windows) and prompts (for generation), as read from one source."""
    documents: tuple[str, ...]
    prompts: tuple[str, ...] = ()
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def chars(self) -> int:
        return sum(len(d) for d in self.documents)


@dataclass(frozen=True)
class TextData:
    """The split: ``calibration`` and ``validation`` are int64 [n, context] token windows (no token is in both),
    ``prompts`` never overlap a validation window."""
    calibration: np.ndarray
    validation: np.ndarray
    prompts: tuple[str, ...]
    context: int
    tokens: int  # tokens in the whole text
    source: str
    seed: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "context": self.context, "tokens": self.tokens, "seed": self.seed,
                "calibration": int(len(self.calibration)), "validation": int(len(self.validation)),
                "prompts": len(self.prompts), "notes": list(self.notes)}


def read_text(path: str | Path) -> Text:
    """A UTF-8 ``.txt`` (documents separated by blank lines) or ``.jsonl`` (``text`` and/or ``prompt`` per line)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"text file {path} not found; check the path" if not path.exists()
                         else f"text file {path} is not a file")
    suffix = path.suffix.lower()
    if suffix != ".jsonl" and suffix not in TEXT_SUFFIXES:
        raise UsageError(f"text file {path}: unsupported type '{suffix}'; give UTF-8 text (.txt) or .jsonl "
                         "with a 'text' or 'prompt' field per line")
    try:
        raw = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise UsageError(f"text file {path} is not UTF-8 (byte {exc.start}, line {line}); re-save it as UTF-8") from None
    raw = raw.removeprefix("\ufeff")
    if not raw.strip():
        raise UsageError(f"text file {path} is empty; give some text")
    if suffix == ".jsonl":
        return _read_jsonl(path, raw)
    return Text(documents=tuple(paragraphs(raw)), source=str(path))


def _read_jsonl(path: Path, raw: str) -> Text:
    docs, prompts = [], []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"text file {path}, line {number}: not JSON ({exc.msg}); give one JSON object per line") from None
        if not isinstance(obj, dict):
            raise UsageError(f"text file {path}, line {number}: a JSON {type(obj).__name__}, not an object with "
                             "a 'text' or 'prompt' field")
        text, prompt = obj.get("text"), obj.get("prompt")
        if text is None and prompt is None:
            raise UsageError(f"text file {path}, line {number}: no 'text' or 'prompt' field (it has: "
                             f"{', '.join(sorted(obj)) or 'nothing'})")
        for key, value in (("text", text), ("prompt", prompt)):
            if value is not None and not isinstance(value, str):
                raise UsageError(f"text file {path}, line {number}: '{key}' is a {type(value).__name__}, not a string")
        if text is not None and text.strip():
            docs.append(text.strip())
        if prompt is not None and prompt.strip():
            prompts.append(prompt.strip())
    if not docs:
        raise UsageError(f"text file {path} has no 'text' field on any line; perplexity needs text to measure on")
    return Text(documents=tuple(docs), prompts=tuple(prompts), source=str(path))


def paragraphs(raw: str) -> list[str]:
    """Blocks of text separated by blank lines, stripped of trailing space."""
    blocks = re.split(r"\n(?:[ \t]*\n)+", raw.replace("\r\n", "\n"))
    return [b.strip("\n").rstrip() for b in blocks if b.strip()]


def builtin_text(part: str = "heldout") -> Text:
    """English prose that ships with Python: ``pydoc_data.topics`` (the language reference's topics, ~0.5 MB).

    Repeated paragraphs are kept once. ``part``: ``train`` (4 of every 5 paragraphs, what the built-in example LM learns from), ``heldout`` (the
    other paragraphs: the default data, text the example LM never saw) or ``all``."""
    if part not in BUILTIN_PARTS:
        raise UsageError(f"built-in text part '{part}' is unknown; choose one of {', '.join(BUILTIN_PARTS)}")
    from pydoc_data.topics import topics

    blocks = list(dict.fromkeys(p for name in sorted(topics) for p in paragraphs(topics[name])))  # no repeats
    if part == "train":
        blocks = [p for i, p in enumerate(blocks) if i % HELDOUT_EVERY != HELDOUT_EVERY - 1]
    elif part == "heldout":
        blocks = [p for i, p in enumerate(blocks) if i % HELDOUT_EVERY == HELDOUT_EVERY - 1]
    digest = hashlib.sha256("\n\n".join(blocks).encode()).hexdigest()[:12]
    note = (f"no --data: the built-in English text was used (Python's pydoc_data.topics, {part} part: "
            f"{len(blocks)} paragraphs, {sum(map(len, blocks))} characters, sha256 {digest})")
    return Text(documents=tuple(blocks), source=f"builtin:pydoc_data.topics[{part}]", notes=(note,))


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens, from a transformers or a ``tokenizers`` tokenizer."""
    try:
        out = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        out = tokenizer.encode(text)
    ids = getattr(out, "ids", out)
    return [int(i) for i in ids]


def split_text(text: Text | str | Sequence[str], tokenizer: Any, *, context: int, seed: int = 0,
               calibration: int = 16, validation: int = 8, prompts: int = 8,
               prompt_chars: int = 200) -> TextData:
    """Seeded, non-overlapping calibration and validation windows of ``context`` tokens, and prompts.

    The documents are tokenized and joined (with the tokenizer's EOS between them where it has one) into one
    stream cut into consecutive windows; a seeded shuffle gives ``validation`` windows, then ``calibration``
    windows. With fewer windows than asked, validation keeps at least half. Prompts are the text's own (jsonl
    ``prompt``, all of them), else the first sentence(s) of documents whose first tokens lie outside every validation window."""
    if isinstance(text, str):
        text = Text(documents=(text,), source="text")
    elif not isinstance(text, Text):
        text = Text(documents=tuple(text), source="documents")
    if context < 2:
        raise UsageError(f"context must be at least 2 tokens, not {context}")
    if calibration < 1 or validation < 1 or prompts < 0:
        raise UsageError(f"split sizes must be positive: calibration={calibration}, validation={validation}, "
                         f"prompts={prompts}")
    eos = getattr(tokenizer, "eos_token_id", None)
    sep = [int(eos)] if isinstance(eos, (int, np.integer)) else []
    stream: list[int] = []
    starts = []
    for doc in text.documents:
        starts.append(len(stream))
        stream.extend(encode(tokenizer, doc) + sep)
    total, windows = len(stream), len(stream) // context
    if windows < 2:
        raise UsageError(f"{text.source or 'the text'} has {total} tokens; it needs at least {2 * context} "
                         f"(one validation and one calibration window of {context} tokens): give more text")
    notes = list(text.notes)
    n_val = min(validation, max(1, windows // 2)) if windows < validation + calibration else validation
    n_cal = min(calibration, windows - n_val)
    if (n_val, n_cal) != (validation, calibration):
        notes.append(f"the text has {total} tokens ({windows} windows of {context}): {n_val} validation and "
                     f"{n_cal} calibration windows instead of {validation} and {calibration}")
    order = np.random.default_rng(seed).permutation(windows)
    val_idx, cal_idx = np.sort(order[:n_val]), np.sort(order[n_val:n_val + n_cal])
    ids = np.asarray(stream[:windows * context], dtype=np.int64).reshape(windows, context)
    chosen = _own_prompts(text, tokenizer, context) if text.prompts else \
        _held_out_prompts(text, tokenizer, starts, set(val_idx.tolist()), context, seed, prompts, prompt_chars)
    if not text.prompts and len(chosen) < prompts:
        notes.append(f"{len(chosen)} prompts (of {prompts} asked) from documents outside the validation windows")
    return TextData(calibration=ids[cal_idx], validation=ids[val_idx], prompts=tuple(chosen), context=context,
                    tokens=total, source=text.source, seed=seed, notes=tuple(notes))


def _own_prompts(text: Text, tokenizer: Any, context: int) -> list[str]:
    for number, prompt in enumerate(text.prompts, 1):
        n = len(encode(tokenizer, prompt))
        if n >= context:
            raise UsageError(f"{text.source}: prompt {number} has {n} tokens, the context is {context}; "
                             "shorten it or raise the context")
    return list(text.prompts)


def _held_out_prompts(text: Text, tokenizer: Any, starts: list[int], val: set[int], context: int, seed: int,
                      limit: int, max_chars: int) -> list[str]:
    candidates = []
    for doc, start in zip(text.documents, starts):
        prompt = first_sentences(doc, max_chars)
        if prompt is None:
            continue
        end = start + len(encode(tokenizer, prompt)) + 1
        if not any(w in val for w in range(start // context, (end - 1) // context + 1)):
            candidates.append(prompt)
    if not candidates or not limit:
        return []
    rng = np.random.default_rng(seed + 1)
    picked = sorted(rng.choice(len(candidates), size=min(limit, len(candidates)), replace=False).tolist())
    return [candidates[i] for i in picked]


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def first_sentences(doc: str, max_chars: int = 200) -> str | None:
    """The document's first sentence(s) of prose, up to ``max_chars``; None for code, tables and headings."""
    flat = " ".join(doc.split())
    if len(flat) < 40 or not flat[0].isalpha() or doc.startswith((" ", "\t")):
        return None
    out = ""
    for sentence in _SENTENCE.split(flat):
        if out and len(out) + 1 + len(sentence) > max_chars:
            break
        out = f"{out} {sentence}".strip()
    if len(out) > max_chars or not out.endswith((".", "!", "?")) or len(out) < 20:
        return None
    return out
