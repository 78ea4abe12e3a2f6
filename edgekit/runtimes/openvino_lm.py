"""Stateful OpenVINO LM folders: logits over a window with the OpenVINO runtime, generation with openvino-genai.

``logits`` runs the folder's ``openvino_model.xml`` on one window from an empty state (the KV cache is the
model's state; every position's logits come back), so perplexity, KL and top-1 agreement need no loop.
``generate`` runs openvino-genai's ``LLMPipeline`` (its KV cache, its greedy search), as an app does, and
``tokenize`` its own tokenizer model (openvino-tokenizers). Threads are set on each compiled model; the CPU
plugin's own defaults (inference precision; the KV cache precision unless the IR names one, as optimum-intel's
fp32 export does) are kept, as an app gets them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from .base import token_window

EXTRA = "pip install 'edgekit[llm]'"
RUNTIME = "openvino-genai"
MODEL_XML = "openvino_model.xml"


def require_ov_genai() -> str:
    """openvino-genai's version; a missing install is a UsageError with its pip line."""
    from importlib import metadata

    try:
        metadata.version("openvino-tokenizers")
        return metadata.version("openvino-genai")
    except metadata.PackageNotFoundError:
        raise UsageError("OpenVINO LM folders need openvino-genai and openvino-tokenizers, which are not "
                         f"installed: {EXTRA}") from None


def is_openvino_lm_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / MODEL_XML).is_file() and (path / "openvino_tokenizer.xml").is_file()


@dataclass(frozen=True)
class OvLmFacts:
    """What the runner and the bench read from the folder's config.json (the model's Hugging Face config)."""
    layers: int
    kv_heads: int
    head_size: int
    context_length: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]

    @classmethod
    def read(cls, folder: str | Path) -> "OvLmFacts":
        folder = Path(folder)
        if not is_openvino_lm_folder(folder):
            raise UsageError(f"{folder}: not an OpenVINO LM folder ({MODEL_XML} and openvino_tokenizer.xml)")
        from .hf_config import config_shape

        return cls(**config_shape(folder))

    def kv_cache_bytes(self, context: int, folder: str | Path) -> int:
        """K and V for ``context`` tokens at the KV cache precision the CPU plugin picks for this model (its
        compiled model's ``KV_CACHE_PRECISION``: the IR's own runtime option, else the plugin's default)."""
        import openvino as ov

        load_tokenizers()
        compiled = ov.Core().compile_model(str(Path(folder) / MODEL_XML), "CPU", {"INFERENCE_NUM_THREADS": 1})
        kind = compiled.get_property("KV_CACHE_PRECISION").get_type_name()
        size = {"f32": 4, "f16": 2, "bf16": 2, "u8": 1, "i8": 1, "u4": 0.5}.get(kind, 2)
        return int(2 * self.layers * self.kv_heads * self.head_size * context * size)


def inference_precision(folder: str | Path) -> str:
    """The precision the CPU plugin computes the folder's model in on this machine by default (``f32``, or
    ``bf16`` on CPUs with AVX512-BF16 or AMX), as its compiled model reports it."""
    import openvino as ov

    load_tokenizers()
    compiled = ov.Core().compile_model(str(Path(folder) / MODEL_XML), "CPU", {"INFERENCE_NUM_THREADS": 1})
    return str(compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name())


def window_inputs(window: np.ndarray) -> dict[str, np.ndarray]:
    """The stateful IR's inputs for one window from an empty cache."""
    n = len(window)
    return {"input_ids": np.asarray(window, dtype=np.int64)[None], "attention_mask": np.ones((1, n), np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}


def load_tokenizers() -> None:
    """openvino-tokenizers registers the tokenizer models' operations with OpenVINO (genai loads it itself too)."""
    import openvino_tokenizers  # noqa: F401


class OvLmRunner:
    """One OpenVINO LM folder, at ``threads`` for prompt and decode. ``precision`` (``f32``, ``bf16``, ``f16``)
    overrides the CPU plugin's inference precision, which is bf16 on CPUs with AVX512-BF16 or AMX whatever the
    IR's weights are; None keeps the plugin's choice, as an app gets it."""

    def __init__(self, folder: str | Path, *, threads: int = 1, context: int | None = None,
                 precision: str | None = None):
        require_ov_genai()
        self.folder = Path(folder)
        self.facts = OvLmFacts.read(self.folder)
        self.context = min(context or self.facts.context_length, self.facts.context_length)
        self.threads = threads
        self.config = {"INFERENCE_NUM_THREADS": threads} | ({"INFERENCE_PRECISION_HINT": precision} if precision else {})
        self._request = None
        self._pipe = None
        self._tokenizer = None

    def request(self):
        if self._request is None:
            import openvino as ov

            load_tokenizers()
            try:
                compiled = ov.Core().compile_model(str(self.folder / MODEL_XML), "CPU", dict(self.config))
            except RuntimeError as exc:
                raise UsageError(f"{self.folder}: OpenVINO cannot load it ({str(exc).splitlines()[0][:200]})") \
                    from None
            self._request = compiled.create_infer_request()
        return self._request

    def pipeline(self):
        if self._pipe is None:
            import openvino_genai

            try:
                self._pipe = openvino_genai.LLMPipeline(str(self.folder), "CPU", **self.config)
            except RuntimeError as exc:
                raise UsageError(f"{self.folder}: openvino-genai cannot load it "
                                 f"({str(exc).splitlines()[0][:200]})") from None
        return self._pipe

    def logits(self, window: np.ndarray) -> np.ndarray:
        """``window``: token ids, shape (1, s). Returns float32 logits of every position, shape (s, vocab)."""
        window = token_window(window, self.context, "the context")
        request = self.request()
        request.reset_state()
        try:
            out = request.infer(window_inputs(window[0]))
        except RuntimeError as exc:
            raise UsageError(f"{self.folder}: OpenVINO failed on a window ({str(exc).splitlines()[0][:200]})") \
                from None
        return np.array(out["logits"][0], dtype=np.float32)

    def generate(self, ids: list[int], max_new: int, greedy: bool = True,
                 eos_ids: tuple[int, ...] | None = None, *, ignore_eos: bool = False):
        """Greedy decoding from the prompt ``ids`` in openvino-genai, until an EOS id or ``max_new`` tokens; the
        EOS token, when one ends it, is the last of the list."""
        import openvino as ov
        import openvino_genai

        if not greedy:
            raise UsageError("the OpenVINO runner decodes greedily only")
        if len(ids) + max_new > self.context:
            raise UsageError(f"a prompt of {len(ids)} tokens plus {max_new} new ones is longer than the context "
                             f"({self.context})")
        config = openvino_genai.GenerationConfig()
        config.max_new_tokens = max_new
        config.do_sample = False
        stops = set(eos_ids if eos_ids is not None else self.facts.eos_token_ids)
        if ignore_eos:  # runs to max_new whatever is chosen (min_new_tokens would mask EOS instead)
            config.ignore_eos = True
        elif stops:
            config.eos_token_id = min(stops)
            config.stop_token_ids = stops
        n = len(ids)
        inputs = openvino_genai.TokenizedInputs(ov.Tensor(np.asarray([ids], dtype=np.int64)),
                                                ov.Tensor(np.ones((1, n), dtype=np.int64)))
        result = self.pipeline().generate(inputs, config)
        self.last_perf = result.perf_metrics
        return [int(t) for t in result.tokens[0]]

    def tokenize(self, text: str) -> list[int]:
        """openvino-genai's tokenization of ``text`` (no special tokens added), as an app using it gets."""
        if self._tokenizer is None:
            import openvino_genai

            self._tokenizer = openvino_genai.Tokenizer(str(self.folder))
        encoded = self._tokenizer.encode(text, add_special_tokens=False)
        return [int(t) for t in encoded.input_ids.data[0]]

    def close(self) -> None:
        self._request = None
        self._pipe = None
        self._tokenizer = None
