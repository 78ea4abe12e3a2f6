"""ONNX Runtime GenAI folders: logits over a window with plain onnxruntime, generation with onnxruntime-genai.

``logits`` feeds the folder's ``model.onnx`` one window with an empty KV cache: the builder's graph returns the
logits of every position, so perplexity, KL and top-1 agreement need no loop. ``generate`` runs genai's own
Generator (its KV cache, its search), as an app would. Threads are set on both sessions; the folder's
``genai_config.json`` is never changed (genai takes the thread count as an in-memory overlay).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from .base import token_window

EXTRA = "pip install 'edgekit[llm]'"
RUNTIME = "onnxruntime-genai"


def require_genai() -> str:
    """onnxruntime-genai's version; a missing install is a UsageError with its pip line."""
    from importlib import metadata

    try:
        return metadata.version("onnxruntime-genai")
    except metadata.PackageNotFoundError:
        raise UsageError(f"ONNX Runtime GenAI folders need onnxruntime-genai, which is not installed: {EXTRA}") from None


@dataclass(frozen=True)
class GenaiConfig:
    """What the runner reads from ``genai_config.json``."""
    filename: str
    layers: int
    kv_heads: int
    head_size: int
    context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    input_ids: str
    attention_mask: str
    past_key: str  # a %d pattern
    past_value: str
    logits: str

    @classmethod
    def read(cls, folder: Path) -> "GenaiConfig":
        path = folder / "genai_config.json"
        if not path.is_file():
            raise UsageError(f"{folder}: no genai_config.json; not an ONNX Runtime GenAI folder")
        try:
            model = json.loads(path.read_text())["model"]
            decoder = model["decoder"]
            eos = model.get("eos_token_id", ())
            return cls(decoder.get("filename", "model.onnx"), int(decoder["num_hidden_layers"]),
                       int(decoder["num_key_value_heads"]), int(decoder["head_size"]), int(model["context_length"]),
                       int(model["vocab_size"]), tuple(eos) if isinstance(eos, list) else (int(eos),),
                       decoder["inputs"]["input_ids"], decoder["inputs"].get("attention_mask", ""),
                       decoder["inputs"]["past_key_names"], decoder["inputs"]["past_value_names"],
                       decoder["outputs"]["logits"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{path}: not a decoder genai_config.json ({type(exc).__name__}: {exc})") from None


class GenaiRunner:
    runtime = RUNTIME

    def __init__(self, folder: str | Path, threads: int = 1):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UsageError(f"{self.folder}: not a folder; an ONNX Runtime GenAI model is a folder")
        self.config = GenaiConfig.read(self.folder)
        if not (self.folder / self.config.filename).is_file():
            raise UsageError(f"{self.folder}: no {self.config.filename} (named by genai_config.json)")
        if threads < 1:
            raise UsageError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._session = None
        self._model = None
        self._model_key: tuple[int, ...] | None = None

    # -- plain onnxruntime: logits of every position of one window ------------------------------------------
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.log_severity_level = 4
            path = self.folder / self.config.filename
            try:
                self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - ORT raises its own types
                raise UsageError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]})") from None
        return self._session

    def logits(self, window: np.ndarray) -> np.ndarray:
        """``window``: int64 token ids, shape (1, s). Returns float32 logits, shape (s, vocab)."""
        window = token_window(window, self.config.context_length, "the model's context")
        if window.min() < 0 or window.max() >= self.config.vocab_size:
            raise UsageError(f"token ids must be in [0, {self.config.vocab_size}), got {window.min()}..{window.max()}")
        session = self.session()
        ids = window.astype(np.int64)
        feed: dict[str, np.ndarray] = {self.config.input_ids: ids}
        for spec in session.get_inputs():
            if spec.name == self.config.attention_mask:
                feed[spec.name] = np.ones_like(ids)
            elif spec.name == "position_ids":
                feed[spec.name] = np.arange(ids.shape[1], dtype=np.int64)[None]
            elif spec.name not in feed:  # a past key/value: empty
                dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
                feed[spec.name] = np.zeros((1, self.config.kv_heads, 0, self.config.head_size), dtype)
        (out,) = session.run([self.config.logits], feed)
        return np.asarray(out[0], dtype=np.float32)

    # -- onnxruntime-genai: the Generator ---------------------------------------------------------------------
    def model(self, eos_ids: tuple[int, ...] | None = None):
        """genai's Model, its session at ``threads`` and (given ``eos_ids``) those EOS ids, through an in-memory
        overlay of genai_config.json. One Model is held at a time."""
        key = tuple(eos_ids) if eos_ids else None
        if self._model is None or self._model_key != key:
            require_genai()
            import onnxruntime_genai as og

            overlay: dict = {"decoder": {"session_options": {"intra_op_num_threads": self.threads,
                                                             "inter_op_num_threads": 1}}}
            if key is not None:
                bad = [t for t in key if not 0 <= t < self.config.vocab_size]
                if bad:
                    raise UsageError(f"EOS ids must be in [0, {self.config.vocab_size}), got {bad}")
                overlay["eos_token_id"] = list(key)
            config = og.Config(str(self.folder))
            config.overlay(json.dumps({"model": overlay}))
            self._model, self._model_key = None, None  # the old one's memory goes before the new one loads
            self._model, self._model_key = og.Model(config), key
        return self._model

    def tokenizer(self):
        import onnxruntime_genai as og

        return og.Tokenizer(self.model())

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer().encode(text)]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer().decode(np.asarray(ids, dtype=np.int32))

    def generator(self, prompt_len: int, max_new_tokens: int, *, greedy: bool = True, exact: bool = False,
                  eos_ids: tuple[int, ...] | None = None, seed: int | None = None):
        """A Generator for a prompt of ``prompt_len`` tokens and up to ``max_new_tokens`` more (its KV buffer is
        sized to their sum). ``exact``: every EOS is masked until then (genai's ``min_length``), as benchmarks
        that ignore EOS do."""
        import onnxruntime_genai as og

        total = prompt_len + max_new_tokens
        if prompt_len < 1 or max_new_tokens < 1:
            raise UsageError(f"a prompt and a generation of at least one token each, got {prompt_len} and "
                             f"{max_new_tokens}")
        if total > self.config.context_length:
            raise UsageError(f"a prompt of {prompt_len} tokens plus {max_new_tokens} new ones is longer than the "
                             f"model's context ({self.config.context_length})")
        model = self.model(eos_ids)
        params = og.GeneratorParams(model)
        search = {"max_length": total, "do_sample": not greedy, "min_length": total if exact else 0}
        if seed is not None:
            search["random_seed"] = seed
        params.set_search_options(**search)
        return og.Generator(model, params)

    def generate(self, prompt_ids, max_new_tokens: int, greedy: bool = True,
                 eos_ids: tuple[int, ...] | None = None, seed: int | None = None) -> list[int]:
        """The new tokens after ``prompt_ids``, the EOS it stopped at included. ``eos_ids``: None stops at the
        model's EOS; a tuple stops at those ids instead; () never stops early: the model's EOS is masked and
        exactly ``max_new_tokens`` come back (compare with a reference that masks it too)."""
        prompt = np.asarray(prompt_ids, dtype=np.int64).reshape(-1)
        if prompt.size and (prompt.min() < 0 or prompt.max() >= self.config.vocab_size):
            raise UsageError(f"prompt token ids must be in [0, {self.config.vocab_size})")
        exact = eos_ids is not None and len(eos_ids) == 0
        generator = self.generator(prompt.size, max_new_tokens, greedy=greedy, exact=exact,
                                   eos_ids=tuple(eos_ids) if eos_ids else None, seed=seed)
        generator.append_tokens(prompt.astype(np.int32)[None])
        out: list[int] = []
        while not generator.is_done() and len(out) < max_new_tokens:
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return out


def is_genai_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "genai_config.json").is_file()


def folder_bytes(folder: str | Path) -> int:
    """Every file of the folder, as shipped."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
