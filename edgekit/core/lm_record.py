"""The typed record of a language-model build: the source, the text it was judged on, each shipped model folder
with its quality, greedy answers, speed, memory and search, the gates and the verdict.

Like BuildRecord, it is the one source of manifest.json, report.json, report.md and the terminal summary; the JSON
keys live in core/manifest.py (``lm_manifest``, ``lm_report``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .attempt import Attempt
from .lm_results import LmBench
from .record import Note
from .results import FormatFailure, Gate

@dataclass(frozen=True)
class LmSource:
    name: str
    origin: str  # what the user gave: a folder, a .gguf file, FILE.py:FACTORY, the built-in example
    loader: str  # hf-folder | gguf | factory | example
    architecture: str  # the transformers class, e.g. LlamaForCausalLM
    model_type: str | None
    parameters: int
    vocab_size: int
    context_length: int | None
    eos_token_ids: tuple[int, ...]
    chat_template: bool  # the tokenizer has one: prompts are wrapped in it, as an app does


@dataclass(frozen=True)
class LmQualityFigures:
    """One file's next-token quality on the validation windows against the source in torch fp32."""
    perplexity: float
    reference_perplexity: float
    ppl_increase: float  # the gated figure: perplexity / reference_perplexity - 1
    kl: float  # mean KL(source || file), nats per position
    top1_agreement: float
    windows: int
    positions: int


@dataclass(frozen=True)
class GreedyAnswer:
    """One prompt answered greedily by the source (torch) and by the file (its own runtime's generator)."""
    prompt: str
    reference: str
    answer: str
    common_tokens: int  # new tokens before the first difference
    reference_tokens: int
    answer_tokens: int
    identical: bool
    stops_alike: bool  # both stop at an EOS after as many tokens, or neither stops


@dataclass(frozen=True)
class LmFile:
    """One shipped model folder: an ONNX Runtime GenAI folder (model.onnx + data, genai_config.json, tokenizer) or
    a GGUF folder (model.gguf, which holds its tokenizer, and edgekit_export.json)."""
    folder: str  # its name inside the bundle
    format: str  # onnxruntime-genai | gguf
    precision: str  # int4 | int5 | int6 | int8 | fp16 | fp32: the width of most of its weights
    runtime: str
    bytes: int  # every file of the folder
    sha256: str  # of the folder's files, names and contents in order
    export: dict[str, Any]  # what the exporter was asked and what it made (edgekit_export.json)
    precision_counts: dict[str, int]  # weight-bearing nodes by precision
    quality: LmQualityFigures
    greedy: tuple[GreedyAnswer, ...] = ()
    bench: LmBench | None = None
    attempts: tuple[Attempt, ...] = ()
    chosen: str = ""  # the attempt's label
    notes: tuple[str, ...] = ()

    @property
    def greedy_identical(self) -> int:
        return sum(1 for g in self.greedy if g.identical)


@dataclass(frozen=True)
class LmData:
    source: str
    context: int
    tokens: int
    validation_windows: int
    prompts: int
    seed: int
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LmRecord:
    source: LmSource
    profile: str
    profile_source: str
    data: LmData
    reference_perplexity: float
    files: tuple[LmFile, ...]
    gates: tuple[Gate, ...]
    passed: bool
    reasons: tuple[str, ...] = ()  # why it did not pass
    failures: tuple[FormatFailure, ...] = ()
    notes: tuple[Note, ...] = ()
    threads: int = 1
    cpu: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    recommended: str | None = None  # the folder to ship: the fastest decode among those that meet every gate
    recommended_why: str = ""

    @property
    def failed_gates(self) -> list[Gate]:
        return [g for g in self.gates if g.passed is False]

    def gates_of(self, folder: str) -> list[Gate]:
        return [g for g in self.gates if g.file == folder]

    def file(self, folder: str) -> LmFile | None:
        return next((f for f in self.files if f.folder == folder), None)

    def meets_every_gate(self, folder: str) -> bool:
        return all(g.passed is not False for g in self.gates_of(folder))

    def to_manifest(self) -> dict[str, Any]:
        from .manifest import lm_manifest

        return lm_manifest(self)

    def to_report(self) -> dict[str, Any]:
        from .manifest import lm_report

        return lm_report(self)
