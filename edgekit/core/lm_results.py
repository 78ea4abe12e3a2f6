"""Typed results for language models: what the LM bench measures (quality metrics live beside their stage)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class LmBench:
    """Speed and memory of one LM file or folder in its runtime, measured in a fresh process.

    Prefill is one prompt of ``prompt_tokens`` tokens; decode is ``new_tokens`` greedy tokens with EOS masked (so
    the count is exact) after it; time to first token covers the prefill and the first token's choice. Each figure
    is the median of ``runs`` timed runs after ``warmup`` untimed ones. ``peak_rss_mb`` is the process's peak
    (VmHWM) after one more generation that fills ``context`` tokens: a prompt appended in pieces of
    ``prompt_tokens`` (an LM file that returns logits at every position would otherwise peak with the prompt's
    logits, 377 MB for 1920 tokens of a 49k vocabulary), then ``new_tokens`` generated. ``base_rss_mb`` is the
    process with its runtime imported and no model loaded, ``loaded_rss_mb`` with the model loaded. ``kv_cache_bytes``: the KV cache at ``context``
    tokens (2 x layers x KV heads x head size x context x bytes per element)."""
    folder: str
    runtime: str
    threads: int
    prompt_tokens: int
    new_tokens: int
    context: int
    runs: int
    warmup: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    ttft_ms: float
    peak_rss_mb: float
    base_rss_mb: float
    loaded_rss_mb: float
    model_bytes: int
    kv_cache_bytes: int
    load_ms: float
    context_decode_tokens_per_s: float | None = None  # decode speed over the generation that filled ``context``
    prefill_by_run: tuple[float, ...] = ()
    decode_by_run: tuple[float, ...] = ()
    ttft_ms_by_run: tuple[float, ...] = ()
    cpu: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("prefill_by_run", "decode_by_run", "ttft_ms_by_run", "notes"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LmBench":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown LmBench keys: {', '.join(unknown)}")
        tuples = ("prefill_by_run", "decode_by_run", "ttft_ms_by_run", "notes")
        values: dict[str, Any] = {k: tuple(v) if k in tuples else v for k, v in data.items()}
        return cls(**values)
