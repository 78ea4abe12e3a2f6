"""Tiny language models for the LM tests, built from configs (random weights, no download) and written to disk the
way a user has them: Hugging Face folders with a tokenizer, and llama.cpp GGUF files (the ``gguf`` package's
writer, with llama.cpp's Q/K row order)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CORPUS = ("The quick brown fox jumps over the lazy dog. A small model reads a little text and learns a little. "
          "Language models predict the next token from the ones before it. ") * 4


def tiny_tokenizer(vocab: int = 320):
    """A byte-level BPE tokenizer (GPT-2's kind, as SmolLM's and Qwen's) with BOS/EOS/PAD and a ChatML template;
    ``write_gguf`` stores it the way llama.cpp's converter stores such a tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgekit.core.text import paragraphs
    from edgekit.examples.tinylm import BOS, CHAT_TEMPLATE, EOS, IM_START, PAD

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, special_tokens=[BOS, IM_START, EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tuple(paragraphs(CORPUS)) + (CORPUS,), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False)


def tiny_config(kind: str, tokenizer, **overrides):
    """A 2-layer config of the family ``kind`` (llama, qwen2, gemma, gemma3) sized for tests."""
    import transformers

    cls = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "gemma": "GemmaConfig",
           "gemma3": "Gemma3TextConfig"}[kind]
    ids = {k: tokenizer.convert_tokens_to_ids(getattr(tokenizer, f"{k}_token")) for k in ("bos", "eos", "pad")}
    kw = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    if kind in ("gemma", "gemma3"):
        kw["head_dim"] = 8
    kw.update(overrides)
    return getattr(transformers, cls)(**kw)


def tiny_model(kind: str, tokenizer, seed: int = 0, **overrides):
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(kind, tokenizer, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def save_folder(model, tokenizer, dest: Path) -> Path:
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Q/K rows (transformers reverses it on load)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(model, tokenizer, path: Path, qtype: str = "Q8_0", arch: str = "llama") -> Path:
    """A llama-architecture model as a GGUF file: 2-D weights in ``qtype``, norms in F32, the BPE tokenizer
    (gpt2 style) and its chat template. ``arch`` overrides general.architecture (to make unreadable files)."""
    import json

    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = {t["content"] for t in spec["added_tokens"]}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t, _ in vocab])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    writer.add_bos_token_id(cfg.bos_token_id)
    writer.add_eos_token_id(cfg.eos_token_id)
    writer.add_pad_token_id(cfg.pad_token_id)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    quant = getattr(gguf.GGMLQuantizationType, qtype)
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        base, _, suffix = key.rpartition(".")
        name = names.get_name(base) + "." + suffix
        data = tensor.detach().float().numpy()
        if key.endswith("q_proj.weight"):
            data = _permute(data, cfg.num_attention_heads)
        elif key.endswith("k_proj.weight"):
            data = _permute(data, cfg.num_key_value_heads)
        if data.ndim == 2 and quant not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            writer.add_tensor(name, gguf.quants.quantize(data, quant), raw_dtype=quant)
        else:
            writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
