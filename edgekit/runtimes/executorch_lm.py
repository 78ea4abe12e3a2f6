"""ExecuTorch LM folders (``model.pte`` with a static KV cache, from optimum-executorch): logits, greedy generation
and tokenization in ExecuTorch's own runtime.

The program's ``forward(input_ids, cache_position)`` returns the logits of every position it is given and writes
their K and V into the cache at those positions; a window run from position 0 overwrites what an earlier one left,
so perplexity needs no loop. One call takes at most ``max_seq_len`` - 1 tokens (a sliding-window model: its
window - 1); a longer window or prompt goes in pieces of that length. ``generate`` is the runner's loop (the prompt in one call, then one call per token,
the arg-max chosen), token ids in and out, as ExecuTorch's ``TextLLMRunner`` runs it without its text layer.
``tokenize`` is pytorch-tokenizers' C++ tokenizer, the one ExecuTorch's runners load. The program's kernels for
the custom SDPA, the KV-cache update and the quantized ops register when their libraries are imported here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from .base import token_window

EXTRA = "pip install 'edgekit[executorch]'"
RUNTIME = "executorch"
PTE, RECORD = "model.pte", "edgekit_export.json"


def require_executorch_lm() -> str:
    """executorch's version; a missing install (it or its tokenizer library) is a UsageError with the pip line."""
    from importlib import metadata

    try:
        metadata.version("pytorch-tokenizers")
        return metadata.version("executorch")
    except metadata.PackageNotFoundError:
        raise UsageError(f"ExecuTorch LM folders need executorch and pytorch-tokenizers, which are not installed: "
                         f"{EXTRA}") from None


def is_executorch_lm_folder(path: str | Path) -> bool:
    path = Path(path)
    if not (path / PTE).is_file() or not (path / RECORD).is_file():
        return False
    try:
        return json.loads((path / RECORD).read_text()).get("format") == "executorch"
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class EtLmFacts:
    """The model's shape (config.json) and the program's static cache length and tokenizer (the record)."""
    layers: int
    kv_heads: int
    head_size: int
    context_length: int  # the static KV cache's max_seq_len
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    tokenizer: str
    cache_bytes_per_element: int
    prefill_limit: int  # tokens one call takes: max_seq_len - 1, or a sliding window's length - 1

    @classmethod
    def read(cls, folder: str | Path) -> "EtLmFacts":
        folder = Path(folder)
        if not is_executorch_lm_folder(folder):
            raise UsageError(f"{folder}: not an ExecuTorch LM folder ({PTE} and an edgekit_export.json of format "
                             "executorch)")
        try:
            record = json.loads((folder / RECORD).read_text())
            max_seq_len, tokenizer = int(record["max_seq_len"]), str(record["tokenizer"])
            linear = str(record["options"]["linear"])
            window = record.get("metadata", {}).get("sliding_window")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{folder}: no readable {RECORD} ({exc})") from None
        from .hf_config import config_shape

        shape = config_shape(folder) | {"context_length": max_seq_len}  # the static cache, not the model's own
        return cls(**shape, tokenizer=tokenizer, cache_bytes_per_element=2 if linear == "fp16" else 4,
                   prefill_limit=min(max_seq_len, int(window) if window else max_seq_len) - 1)

    def kv_cache_bytes(self, context: int | None = None) -> int:
        """The static cache: allocated for max_seq_len tokens when the program loads, whatever ``context`` is."""
        return 2 * self.layers * self.kv_heads * self.head_size * self.context_length * self.cache_bytes_per_element


def load_runner_tokenizer(kind: str, path: Path):
    """pytorch-tokenizers' C++ tokenizer (``CppHFTokenizer`` or ``CppSPTokenizer``) loaded from ``path``."""
    import pytorch_tokenizers

    tokenizer = getattr(pytorch_tokenizers, kind)()
    tokenizer.load(str(path))
    return tokenizer


def load_kernels() -> None:
    """ExecuTorch's runtime, with the kernels an LM program calls outside XNNPACK: the custom SDPA and KV-cache
    update (llama::custom_sdpa, update_cache) and the quantized embedding ops."""
    from ..files.native_output import capture_fd2
    from .executorch import import_executorch

    import_executorch()

    def load():
        import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
        import executorch.kernels.quantized  # noqa: F401

    try:
        capture_fd2(load)
    except ImportError as exc:
        raise UsageError(f"ExecuTorch's LLM kernels are missing ({exc.name}): {EXTRA}") from None


class EtLmRunner:
    """One ExecuTorch LM folder. The XNNPACK thread pool is process-wide: the bench worker sets it
    (``runtimes.executorch.set_threads``); here ``threads`` is only recorded."""

    def __init__(self, folder: str | Path, *, threads: int = 1, context: int | None = None):
        require_executorch_lm()
        self.folder = Path(folder)
        self.facts = EtLmFacts.read(self.folder)
        self.context = min(context or self.facts.context_length, self.facts.context_length)
        self.threads = threads
        self._method = None
        self._tokenizer = None
        self._ran = False

    def method(self):
        if self._method is None:
            from ..files.native_output import capture_fd2
            from .executorch import import_executorch

            load_kernels()
            runtime = import_executorch()
            got = {}

            def load():
                program = runtime.Runtime.get().load_program(str(self.folder / PTE))
                got["method"] = program.load_method("forward")

            try:
                capture_fd2(load)
            except Exception as exc:  # noqa: BLE001 - the runtime raises RuntimeError/ValueError
                raise UsageError(f"{self.folder}: ExecuTorch cannot load it ({str(exc).splitlines()[0][:200]})") \
                    from None
            self._method = got["method"]
        return self._method

    def forward(self, ids, start: int) -> np.ndarray:
        """Logits of ``ids`` placed at positions ``start``... in the cache, shape (len(ids), vocab)."""
        import torch

        n = len(ids)
        if start + n > self.facts.context_length:
            raise UsageError(f"positions up to {start + n} are past the program's static cache "
                             f"({self.facts.context_length} tokens)")
        feed = [torch.tensor([list(ids)], dtype=torch.long), torch.arange(start, start + n, dtype=torch.long)]
        try:
            if self._ran:
                out = self.method().execute(feed)[0]
            else:  # the thread pool starts on the first parallel op and probes the CPU on fd 2
                from ..files.native_output import capture_fd2

                got: dict = {}
                capture_fd2(lambda: got.setdefault("out", self.method().execute(feed)[0]))
                out, self._ran = got["out"], True
        except RuntimeError as exc:
            raise UsageError(f"{self.folder}: ExecuTorch failed on {n} tokens at position {start} "
                             f"({str(exc).splitlines()[0][:200]})") from None
        return out.detach().numpy()[0]

    def logits(self, window: np.ndarray) -> np.ndarray:
        """``window``: token ids, shape (1, s). Returns float32 logits of every position, shape (s, vocab)."""
        window = token_window(window, self.facts.context_length, "the program's static cache")
        ids, step = [int(t) for t in window[0]], self.facts.prefill_limit  # one call takes at most prefill_limit
        return np.concatenate([np.asarray(self.forward(ids[start:start + step], start), dtype=np.float32)
                               for start in range(0, len(ids), step)])

    def generate(self, ids: list[int], max_new: int, greedy: bool = True,
                 eos_ids: tuple[int, ...] | None = None, *, ignore_eos: bool = False, chunk: int | None = None,
                 timings: dict | None = None) -> list[int]:
        """Greedy decoding from ``ids`` until an EOS id (the last token kept) or ``max_new`` tokens. ``chunk``
        feeds the prompt in pieces; ``timings`` gets the seconds at which the prompt was in and the first token
        chosen."""
        import time

        if not greedy:
            raise UsageError("the ExecuTorch runner decodes greedily only")
        if not ids or max_new < 1:
            raise UsageError(f"generation needs a prompt and at least one new token, got {len(ids)} and {max_new}")
        if len(ids) + max_new > self.facts.context_length:
            raise UsageError(f"a prompt of {len(ids)} tokens plus {max_new} new ones is longer than the program's "
                             f"static cache ({self.facts.context_length})")
        stops = set() if ignore_eos else set(eos_ids if eos_ids is not None else self.facts.eos_token_ids)
        step = min(chunk or len(ids), self.facts.prefill_limit)
        began = time.perf_counter()
        for start in range(0, len(ids), step):
            last = self.forward(ids[start:start + step], start)[-1]
        prefilled = time.perf_counter()
        token = int(np.argmax(last))
        out = [token]
        first = time.perf_counter()
        position = len(ids)
        while len(out) < max_new and token not in stops:
            token = int(np.argmax(self.forward([token], position)[-1]))
            position += 1
            out.append(token)
        if timings is not None:
            timings.update(began=began, prefilled=prefilled, first=first, end=time.perf_counter())
        return out

    def tokenize(self, text: str) -> list[int]:
        """pytorch-tokenizers' tokenization of ``text`` (no BOS or EOS added), as ExecuTorch's runner gets it."""
        if self._tokenizer is None:
            from ..files.native_output import capture_fd2

            kind = "CppHFTokenizer" if self.facts.tokenizer.endswith(".json") else "CppSPTokenizer"
            got: dict = {}
            capture_fd2(lambda: got.setdefault("t", load_runner_tokenizer(kind, self.folder / self.facts.tokenizer)))
            self._tokenizer = got["t"]
        return [int(t) for t in self._tokenizer.encode(text, 0, 0)]

    def close(self) -> None:
        self._method = None
        self._tokenizer = None
