"""Loading causal language models (edgekit.sources.lm): Hugging Face folders of the Llama, Qwen2 and Gemma families
built from configs (random weights, no download), GGUF files written here, factories, and every bad input as one
UsageError line."""
import json
import shutil
import textwrap

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from edgekit.core.errors import UsageError  # noqa: E402
from edgekit.sources.lm import is_causal_lm_source, load_causal_lm, save_hf_folder  # noqa: E402

from lm_helpers import save_folder, tiny_model, tiny_tokenizer, write_gguf  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("lm")
    return {kind: save_folder(tiny_model(kind, tokenizer), tokenizer, root / kind)
            for kind in ("llama", "qwen2", "gemma", "gemma3")}


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def _logits(module, ids):
    with torch.no_grad():
        return module(input_ids=torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("kind, arch", [("llama", "LlamaForCausalLM"), ("qwen2", "Qwen2ForCausalLM"),
                                        ("gemma", "GemmaForCausalLM"), ("gemma3", "Gemma3ForCausalLM")])
def test_hf_folders_of_each_family_load(folders, tokenizer, kind, arch):
    model = load_causal_lm(folders[kind])
    assert model.kind == "causal-lm" and model.loader == "hf-folder" and model.name == kind
    meta = model.meta
    assert meta["architecture"] == arch and meta["hf_dir"] == folders[kind]
    assert meta["eos_token_ids"] == (tokenizer.eos_token_id,)
    assert meta["chat_template"] == tokenizer.chat_template and meta["context_length"] == 128
    assert meta["vocab_size"] == len(tokenizer) and meta["parameters"] == sum(p.numel() for p in model.module.parameters())
    assert model.iospec.inputs[0].name == "input_ids" and model.iospec.outputs[0].shape == ("batch", "sequence", len(tokenizer))
    assert not model.module.training and next(model.module.parameters()).dtype == torch.float32
    ids = model.example_inputs["input_ids"]
    assert ids.dtype == np.int64 and ids.shape[0] == 1
    reference = tiny_model(kind, tokenizer)  # same seed: the same weights as were saved
    assert np.allclose(_logits(model.module, ids[0].tolist()), _logits(reference, ids[0].tolist()), atol=1e-5)
    assert is_causal_lm_source(folders[kind])


def test_folder_refusals_are_one_line_each(folders, tmp_path):
    base = folders["qwen2"]

    def variant(name, edit):
        d = tmp_path / name
        shutil.copytree(base, d)
        edit(d)
        return d

    def no_arch(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg["architectures"] = ["Qwen2Model"]
        (d / "config.json").write_text(json.dumps(cfg))

    def remote(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg.update(model_type="mystery", architectures=["MysteryForCausalLM"],
                   auto_map={"AutoModelForCausalLM": "modeling_mystery.MysteryForCausalLM"})
        (d / "config.json").write_text(json.dumps(cfg))
        (d / "modeling_mystery.py").write_text("raise SystemExit('folder code ran')\n")

    cases = {
        "no config.json": (variant("a", lambda d: (d / "config.json").unlink()), "has no config.json"),
        "not causal": (variant("b", no_arch), "architectures ['Qwen2Model'] has no *ForCausalLM"),
        "no weights": (variant("c", lambda d: (d / "model.safetensors").unlink()), "has no weights (*.safetensors)"),
        "pickle weights": (variant("d", lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin")),
                           "it has pytorch_model.bin, a pickle edgekit does not load"),
        "no tokenizer": (variant("e", lambda d: (d / "tokenizer.json").unlink()), "has no tokenizer"),
        "remote code": (variant("f", remote), "pass --trust-remote-code"),
    }
    for label, (folder, needle) in cases.items():
        with pytest.raises(UsageError) as exc:
            load_causal_lm(folder)
        assert needle in _one_line(exc), (label, str(exc.value))
        assert str(folder) in str(exc.value), label
    with pytest.raises(UsageError) as exc:
        load_causal_lm(tmp_path / "nowhere")
    assert "not found" in _one_line(exc)


def test_auto_map_for_a_native_architecture_loads_without_folder_code(folders, tmp_path):
    d = tmp_path / "native"
    shutil.copytree(folders["llama"], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.LlamaForCausalLM"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_x.py").write_text("raise SystemExit('folder code ran')\n")
    model = load_causal_lm(d)
    assert model.meta["architecture"] == "LlamaForCausalLM"
    assert "auto_map in the folder is ignored" in model.meta["notes"][0]


def test_tokenizer_dir_replaces_a_missing_tokenizer(folders, tmp_path, tokenizer):
    d = tmp_path / "weights-only"
    shutil.copytree(folders["gemma"], d)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (d / f).unlink()
    model = load_causal_lm(d, tokenizer=folders["llama"])
    assert model.meta["tokenizer"].encode("quick brown") == tokenizer.encode("quick brown")
    with pytest.raises(UsageError) as exc:
        load_causal_lm(d, tokenizer=tmp_path / "missing")
    assert "tokenizer folder" in _one_line(exc)


def test_factory_with_a_tokenizer_attribute(tmp_path, folders):
    f = tmp_path / "lm_factory.py"
    f.write_text(textwrap.dedent(f"""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        def make():
            model = AutoModelForCausalLM.from_pretrained({str(folders['qwen2'])!r})
            model.tokenizer = AutoTokenizer.from_pretrained({str(folders['qwen2'])!r})
            return model
        def bare():
            return AutoModelForCausalLM.from_pretrained({str(folders['qwen2'])!r})
        def not_lm():
            import torch
            return torch.nn.Linear(2, 2)
    """))
    model = load_causal_lm(f"{f}:make")
    assert model.loader == "factory" and model.meta["architecture"] == "Qwen2ForCausalLM"
    assert model.meta["hf_dir"] is None and model.name == "lm_factory"
    assert load_causal_lm(f"{f}:bare", tokenizer=folders["qwen2"]).meta["tokenizer"] is not None
    with pytest.raises(UsageError) as exc:
        load_causal_lm(f"{f}:bare")
    assert "without a tokenizer attribute; set model.tokenizer in the factory or pass --tokenizer DIR" in _one_line(exc)
    with pytest.raises(UsageError) as exc:
        load_causal_lm(f"{f}:not_lm")
    assert "returned Linear, not a transformers causal LM" in _one_line(exc)


def test_save_hf_folder_round_trip(folders, tmp_path):
    model = load_causal_lm(folders["gemma3"])
    out = save_hf_folder(model, tmp_path / "copy")
    again = load_causal_lm(out)
    ids = model.example_inputs["input_ids"][0].tolist()
    assert np.array_equal(_logits(model.module, ids), _logits(again.module, ids))
    assert again.meta["chat_template"] == model.meta["chat_template"]
    assert not list(tmp_path.glob(".copy.partial*"))
    with pytest.raises(UsageError, match="already exists"):
        save_hf_folder(model, out)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory, tokenizer):
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")
    source = tiny_model("llama", tokenizer, seed=1)
    return source, write_gguf(source, tokenizer, tmp_path_factory.mktemp("gguf") / "tiny.Q8_0.gguf")


def test_gguf_round_trip(gguf_file, tokenizer, tmp_path):
    source, path = gguf_file
    model = load_causal_lm(path)
    assert model.loader == "gguf" and model.meta["architecture"] == "LlamaForCausalLM" and model.meta["hf_dir"] is None
    assert model.meta["chat_template"] == tokenizer.chat_template
    assert model.meta["eos_token_ids"] == (tokenizer.eos_token_id,)
    assert model.meta["tokenizer"].encode("The lazy dog.") == tokenizer.encode("The lazy dog.")
    assert not hasattr(model.module.config, "quantization_config")  # a plain model: it can be saved
    ids = tokenizer.encode("The quick brown fox jumps over the lazy dog.")
    ref, got = _logits(source, ids), _logits(model.module, ids)
    assert np.abs(ref - got).max() < 0.02 * np.abs(ref).max()  # Q8_0 weights
    folder = save_hf_folder(model, tmp_path / "from-gguf")
    assert np.array_equal(_logits(load_causal_lm(folder).module, ids), got)
    assert is_causal_lm_source(path)


def test_gguf_refusals(gguf_file, tokenizer, tmp_path):
    source, good = gguf_file
    odd = write_gguf(source, tokenizer, tmp_path / "odd.gguf", arch="wavenet")
    with pytest.raises(UsageError) as exc:
        load_causal_lm(odd)
    assert "GGUF architecture 'wavenet' is not a causal LM transformers can read" in _one_line(exc)
    # an unknown tensor type: rewrite the first tensor's type field (a uint32 after its name, dims and shape)
    import gguf

    reader = gguf.GGUFReader(str(good))
    tensor = reader.tensors[0]
    field = tensor.field
    type_part = field.parts[-2]  # n_dims, dims, type, offset
    offset = field.offset + sum(p.nbytes for p in field.parts[:-2])
    data = bytearray(good.read_bytes())
    assert int.from_bytes(data[offset:offset + 4], "little") == int(type_part[0])
    data[offset:offset + 4] = (77).to_bytes(4, "little")
    bad = tmp_path / "badtype.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(UsageError) as exc:
        load_causal_lm(bad)
    assert "unknown GGUF type" in _one_line(exc) and str(bad) in str(exc.value)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(UsageError) as exc:
        load_causal_lm(junk)
    assert str(junk) in _one_line(exc)
    with pytest.raises(UsageError) as exc:
        load_causal_lm(tmp_path / "missing.gguf")
    assert "not found" in _one_line(exc)
