"""GGUF files of the architectures the build takes besides the example's Llama (tests/test_lm_build.py), made by
llama.cpp's own converter from folders built from configs (no download): the F32 file's logits in llama.cpp match
torch's, and Q8_0 stays close; a tokenizer llama.cpp's converter cannot place is one line, not a traceback."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("llama_cpp")
sys.path.insert(0, str(Path(__file__).parent))
from lm_helpers import CORPUS, save_folder, tiny_model, tiny_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def spm_tokenizer():
    """The example LM's tokenizer recipe (SentencePiece BPE with byte fallback), which llama.cpp converts."""
    from edgekit.core.text import paragraphs
    from edgekit.examples.tinylm import train_tokenizer

    return train_tokenizer(tuple(paragraphs(CORPUS)) + (CORPUS,), 320)


def torch_logits(model, window: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.as_tensor(window, dtype=torch.long)).logits[0].float().numpy()


@pytest.mark.parametrize("kind, arch", [("qwen2", "qwen2"), ("gemma", "gemma"), ("gemma3", "gemma3")])
def test_llama_cpps_converter_and_runtime_match_torch(kind, arch, spm_tokenizer, tmp_path):
    from edgekit.export.gguf import GgufOptions, convert_hf, quantize, tensor_types
    from edgekit.runtimes.llamacpp import GgufFacts, LlamaRunner

    # Gemma 3 scales queries by query_pre_attn_scalar ** -0.5, which published Gemma 3 models (but the 27B) set to
    # head_dim; llama.cpp assumes that, and the config's default (256) does not match the tiny head_dim of 8
    extra = {"query_pre_attn_scalar": 8} if kind == "gemma3" else {}
    model = tiny_model(kind, spm_tokenizer, **extra)
    folder = save_folder(model, spm_tokenizer, tmp_path / kind)
    (folder / "tokenizer.model").write_bytes(spm_tokenizer.spm_model)
    f32 = convert_hf(folder, tmp_path / f"{kind}-f32.gguf", "f32")
    facts = GgufFacts.read(f32)
    assert facts.architecture == arch and facts.layers == 2 and facts.kv_heads == 2
    window = np.asarray([spm_tokenizer.encode(CORPUS[:400], add_special_tokens=False)[:48]])
    want = torch_logits(model, window)
    got = LlamaRunner(f32, all_logits=True, context=64).logits(window)
    assert got.shape == want.shape and np.abs(got - want).max() < 2e-3, np.abs(got - want).max()
    q8 = quantize(f32, tmp_path / f"{kind}-q8.gguf", GgufOptions("Q8_0"))
    assert "Q8_0" in set(tensor_types(q8).values())
    got8 = LlamaRunner(q8, all_logits=True, context=64).logits(window)
    assert np.abs(got8 - want).max() < 0.2 and (got8.argmax(-1) == want.argmax(-1)).mean() > 0.9


def test_a_tokenizer_the_converter_cannot_place_is_one_line(tmp_path):
    """A byte-level BPE of one's own: llama.cpp recognizes published pre-tokenizers by their output, so its
    converter refuses this one; the build lists the GGUF format as failed in one line and ships the rest."""
    from edgekit.core.errors import StageError
    from edgekit.export.gguf import convert_hf

    tok = tiny_tokenizer()
    model = tiny_model("qwen2", tok, max_position_embeddings=512, hidden_size=64)  # GQA: 16-wide heads
    folder = save_folder(model, tok, tmp_path / "qwen2-bpe")
    with pytest.raises(StageError) as info:
        convert_hf(folder, tmp_path / "x.gguf", "f32")
    assert info.value.reason.startswith("llama.cpp's converter does not know this tokenizer's pre-tokenizer")
    assert not (tmp_path / "x.gguf").exists()
    from edgekit import build

    result = build(str(folder), profile="mobile", threads=1, out=tmp_path / "out")
    assert [f.format for f in result.record.files] == ["onnxruntime-genai"]  # the other format ships
    (failure,) = result.record.failures
    assert failure.format == "gguf" and failure.stage == "export gguf" and "pre-tokenizer" in failure.reason
    assert not result.passed and any(r.startswith("gguf: no file (export gguf:") for r in result.record.reasons)
