"""llama.cpp through llama-cpp-python: a ``.gguf`` file's logits over a window, greedy generation with its KV cache,
its own tokenizer, and the facts the bench needs from the file's metadata (read with the ``gguf`` package).

``logits`` evaluates one window from an empty cache with every position's logits kept, so perplexity, KL and top-1
agreement need no loop; ``generate`` decodes greedily token by token as an app does. Threads are set on the
context; nothing is written beside the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from .base import token_window

EXTRA = "pip install 'edgekit[llm]'"
RUNTIME = "llama.cpp"


def require_llamacpp() -> str:
    """llama-cpp-python's version; a missing install is a UsageError with its pip line."""
    from importlib import metadata

    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        raise UsageError(f"GGUF files need llama-cpp-python (llama.cpp's bindings), which is not installed: "
                         f"{EXTRA}") from None


@dataclass(frozen=True)
class GgufFacts:
    """What the runner and the bench read from a GGUF file's metadata."""
    architecture: str
    layers: int
    kv_heads: int
    key_length: int
    value_length: int
    context_length: int
    vocab_size: int
    file_type: int | None  # llama.cpp's LLAMA_FTYPE_* of the file

    @classmethod
    def read(cls, path: str | Path) -> "GgufFacts":
        import gguf

        path = Path(path)
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        try:
            reader = gguf.GGUFReader(str(path))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
            raise UsageError(f"{path}: not a readable GGUF file ({str(exc).splitlines()[0][:160]})") from None

        def value(key: str, default=None):
            field = reader.fields.get(key)
            return default if field is None else field.contents()

        arch = value("general.architecture")
        if not arch:
            raise UsageError(f"{path}: a GGUF file without general.architecture")
        heads = int(value(f"{arch}.attention.head_count", 1))
        kv = value(f"{arch}.attention.head_count_kv", heads)
        kv = int(max(kv)) if isinstance(kv, list) else int(kv)
        embd = int(value(f"{arch}.embedding_length", 0))
        key_len = int(value(f"{arch}.attention.key_length", embd // max(heads, 1)))
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        vocab = int(value(f"{arch}.vocab_size", len(tokens.data) if tokens is not None else 0))
        ftype = value("general.file_type")
        return cls(architecture=str(arch), layers=int(value(f"{arch}.block_count", 0)), kv_heads=kv,
                   key_length=key_len, value_length=int(value(f"{arch}.attention.value_length", key_len)),
                   context_length=int(value(f"{arch}.context_length", 2048)), vocab_size=vocab,
                   file_type=None if ftype is None else int(ftype))

    def kv_cache_bytes(self, context: int, element_bytes: int = 2) -> int:
        """llama.cpp's default KV cache (f16 K and V) for ``context`` tokens."""
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * context * element_bytes


def quiet() -> None:
    """llama.cpp's own log lines (loading, the quantizer's per-tensor notes) stay out of the terminal: errors only."""
    import logging

    import llama_cpp._logger  # noqa: F401 - installs llama-cpp-python's log callback, which reads this level

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)


def last_logits(llm) -> np.ndarray:
    """The logits of the last token evaluated (a view into llama.cpp's buffer, valid until the next eval)."""
    import llama_cpp

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


class LlamaRunner:
    """One GGUF file in llama.cpp (llama-cpp-python's ``Llama``), at ``threads`` for prompt and decode."""

    def __init__(self, path: str | Path, *, threads: int = 1, context: int | None = None, all_logits: bool = False):
        require_llamacpp()
        self.path = Path(path)
        self.facts = GgufFacts.read(self.path)
        self.context = min(context or self.facts.context_length, self.facts.context_length)
        self.threads = threads
        self.all_logits = all_logits
        self._llm = None

    def llm(self):
        if self._llm is None:
            from llama_cpp import Llama

            quiet()
            try:
                self._llm = Llama(model_path=str(self.path), n_ctx=self.context, n_batch=min(self.context, 512),
                                  n_ubatch=min(self.context, 512), n_threads=self.threads,
                                  n_threads_batch=self.threads, logits_all=self.all_logits, verbose=False, seed=0)
            except (ValueError, RuntimeError) as exc:
                raise UsageError(f"{self.path}: llama.cpp cannot load it ({str(exc).splitlines()[0][:200]})") from None
        return self._llm

    def logits(self, window: np.ndarray) -> np.ndarray:
        """``window``: token ids, shape (1, s). Returns float32 logits of every position, shape (s, vocab)."""
        window = token_window(window, self.context, "the context")
        if not self.all_logits:
            raise UsageError("this runner keeps only the last position's logits (all_logits=False)")
        llm = self.llm()
        llm.reset()
        llm.eval([int(t) for t in window[0]])
        return np.array(llm.scores[:window.shape[1]], dtype=np.float32)

    def generate(self, ids: list[int], max_new: int, greedy: bool = True,
                 eos_ids: tuple[int, ...] | None = None) -> list[int]:
        """Greedy decoding from the prompt ``ids`` (llama.cpp's KV cache), until an EOS id or ``max_new`` tokens."""
        if not greedy:
            raise UsageError("the llama.cpp runner decodes greedily only")
        if len(ids) + max_new > self.context:
            raise UsageError(f"a prompt of {len(ids)} tokens plus {max_new} new ones is longer than the context "
                             f"({self.context})")
        llm = self.llm()
        llm.reset()
        llm.eval([int(t) for t in ids])
        stop, out = set(eos_ids or ()), []
        while len(out) < max_new:
            token = int(np.argmax(last_logits(llm)))
            out.append(token)
            if token in stop or len(out) == max_new:
                break
            llm.eval([token])
        return out

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's own tokenization of ``text`` (no BOS, special tokens parsed), as an app using it gets."""
        return list(self.llm().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
