"""Load a decoder-only causal language model into a Model (kind ``causal-lm``): a Hugging Face folder, a llama.cpp
``.gguf`` file, or ``file.py:factory``.

Everything loads offline (``local_files_only=True``) in torch fp32, eval mode. Code from a model folder never runs
unless ``trust_remote_code=True`` (``auto_map`` in its config names that code). A GGUF file is dequantized by
transformers (which needs ``gguf`` and ``accelerate``) and copied into a plain model made from its config, so it can
be saved as a folder: exporters take folders (``hf_folder``/``save_hf_folder``).
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UsageError, one_line
from ..core.iospec import IOSpec, TensorSpec
from ..core.model import Model
from ..core.text import encode

INSTALL = "pip install 'edgekit[llm]'"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
GGUF_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe"}  # llama.cpp's names -> transformers' table
NOT_CAUSAL_GGUF = {"general", "tokenizer", "t5", "t5encoder", "umt5"}  # transformers' GGUF table, less non-LMs


def is_causal_lm_source(source: str | Path) -> bool:
    """Whether ``source`` is a ``.gguf`` file or a folder with a ``config.json`` (a Hugging Face model folder)."""
    path = Path(source)
    return path.suffix.lower() == ".gguf" or (path.is_dir() and (path / "config.json").is_file())


def load_causal_lm(source: str | Path, *, trust_remote_code: bool = False, tokenizer: Any = None) -> Model:
    """A causal-LM Model from a Hugging Face folder, a ``.gguf`` file or ``file.py:factory``.

    ``tokenizer`` is a folder to read the tokenizer from (``--tokenizer DIR``) or a tokenizer object; without it
    the tokenizer comes from the folder, the GGUF file or the factory's model's ``tokenizer`` attribute."""
    text = str(source)
    path = Path(text)
    if path.suffix.lower() == ".gguf":
        return _from_gguf(path, tokenizer)
    if path.is_dir():
        return _from_folder(path, trust_remote_code, tokenizer)
    if ":" in text and not path.exists():
        return _from_factory(text, trust_remote_code, tokenizer)
    if path.exists():
        raise UsageError(f"model {text} is not a language model source; give a Hugging Face model folder "
                         "(config.json, *.safetensors, tokenizer.json), a .gguf file or FILE.py:FACTORY")
    raise UsageError(f"model {text} not found; check the path")


def _need(*modules: str, why: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"{why} needs {', '.join(missing)}, which is not installed: {INSTALL}")


def _from_folder(folder: Path, trust_remote_code: bool, tokenizer: Any) -> Model:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UsageError(f"model folder {folder} has no config.json; a Hugging Face model folder holds config.json, "
                         "*.safetensors and tokenizer.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{config_file} is not readable JSON ({one_line(exc)})") from None
    archs = config.get("architectures") or []
    causal = [a for a in archs if isinstance(a, str) and a.endswith("ForCausalLM")]
    if not causal:
        raise UsageError(f"{config_file}: architectures {archs or '(none)'} has no *ForCausalLM; edgekit builds "
                         "decoder-only causal language models from a folder")
    if not any(folder.glob("*.safetensors")):
        bins = sorted(p.name for p in folder.glob("*.bin"))
        raise UsageError(f"model folder {folder} has no weights (*.safetensors)" + (
            f"; it has {bins[0]}, a pickle edgekit does not load: re-save it with save_pretrained()" if bins else ""))
    _need("transformers", "tokenizers", "safetensors", why="loading a language model")
    notes = _check_remote_code(folder, config, causal[0], trust_remote_code)
    tok = _tokenizer(tokenizer, trust_remote_code) if tokenizer is not None else \
        _folder_tokenizer(folder, trust_remote_code)
    from transformers import AutoModelForCausalLM

    try:
        module = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, **fp32(),
                                                      trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise UsageError(f"model folder {folder} cannot be loaded: {one_line(exc)}") from None
    return lm_model(module, tok, name=folder.name, loader="hf-folder", origin=str(folder), hf_dir=folder,
                    notes=notes, trust_remote_code=trust_remote_code)


def _check_remote_code(folder: Path, config: dict, arch: str, trust: bool) -> list[str]:
    """Refuse a folder whose model needs its own code unless trusted; one transformers has natively loads without it."""
    tok_cfg = folder / "tokenizer_config.json"
    mapped = "auto_map" in config or (tok_cfg.is_file() and '"auto_map"' in tok_cfg.read_text(errors="replace"))
    if not mapped or trust:
        return []
    import transformers
    from transformers import CONFIG_MAPPING

    if config.get("model_type") in CONFIG_MAPPING and hasattr(transformers, arch):
        return [f"auto_map in the folder is ignored: transformers' own {arch} is used (no code from the folder runs)"]
    raise UsageError(f"model folder {folder} needs its own code ({arch} via auto_map in its config), which edgekit "
                     "does not run by default; pass --trust-remote-code if you trust the folder")


def _folder_tokenizer(folder: Path, trust_remote_code: bool):
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise UsageError(f"model folder {folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); add the model's "
                         "tokenizer files or pass --tokenizer DIR")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise UsageError(f"the tokenizer in {folder} cannot be loaded: {one_line(exc)}") from None


def _tokenizer(given: Any, trust_remote_code: bool):
    """``--tokenizer``: a folder, or (from Python) a tokenizer object."""
    if isinstance(given, (str, os.PathLike)):
        folder = Path(given)
        if not folder.is_dir():
            raise UsageError(f"tokenizer folder {folder} not found; give a folder with tokenizer.json")
        return _folder_tokenizer(folder, trust_remote_code)
    if not callable(getattr(given, "encode", None)) or not callable(getattr(given, "decode", None)):
        raise UsageError(f"tokenizer {type(given).__name__} has no encode/decode; give a transformers tokenizer")
    return given


def _from_gguf(file: Path, tokenizer: Any) -> Model:
    if not file.is_file():
        raise UsageError(f"model file {file} not found; check the path")
    _need("transformers", "tokenizers", "gguf", "accelerate", why="reading a .gguf file")
    arch = gguf_architecture(file)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = _tokenizer(tokenizer, False) if tokenizer is not None else \
            AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name, local_files_only=True)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{file}: its tokenizer cannot be read ({one_line(exc)}); pass --tokenizer DIR") from None
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, local_files_only=True,
                                                      **fp32(), **_dequantized())
    except Exception as exc:
        raise UsageError(f"{file} ({arch}) cannot be loaded by transformers: {one_line(exc)}") from None
    module = plain_copy(loaded)
    del loaded
    return lm_model(module, tok, name=file.stem, loader="gguf", origin=str(file), hf_dir=None,
                    notes=[f"dequantized from GGUF ({arch}) to fp32 by transformers"])


def fp32() -> dict:
    """transformers' keyword for a float32 model: ``dtype`` since 4.56, ``torch_dtype`` before."""
    import torch
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}


def _dequantized() -> dict:
    """transformers >= 5 can keep GGUF blocks packed and fetch matmul/attention kernels from a hub for them: ask
    for plain fp32 weights (older versions always dequantize)."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def gguf_architecture(file: Path) -> str:
    """The file's ``general.architecture``, after checking transformers can read it and every tensor type in it."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(file))
    except ValueError as exc:
        kind = "a tensor of an unknown GGUF type" if "GGMLQuantizationType" in str(exc) else "an unreadable header"
        raise UsageError(f"{file} has {kind} ({one_line(exc)}); it is not a GGUF file transformers can read") from None
    except Exception as exc:
        raise UsageError(f"{file} is not a readable GGUF file ({one_line(exc)})") from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise UsageError(f"{file} has no general.architecture; it is not a llama.cpp model file")
    arch = str(field.contents())
    readable = sorted(gguf_readable_architectures())
    if GGUF_ALIASES.get(arch, arch).replace("-", "_") not in readable:
        raise UsageError(f"{file}: GGUF architecture '{arch}' is not a causal LM transformers can read "
                         f"(it reads {', '.join(readable)})")
    from gguf import quants

    known = set(getattr(quants, "_type_traits", {})) or None  # the types gguf can dequantize (F32/F16 need none)
    if known is not None:
        plain = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16}
        for tensor in reader.tensors:
            if tensor.tensor_type not in known | plain:
                raise UsageError(f"{file}: tensor {tensor.name} is of GGUF type {tensor.tensor_type.name}, which "
                                 "transformers cannot dequantize; convert the file to another type (Q8_0, Q4_K_M, F16)")
    return arch


def gguf_readable_architectures() -> set[str]:
    """The GGUF architectures this transformers reads as causal LMs (its legacy table and its newer one)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES)
    try:
        from transformers.integrations.gguf import GGUF_ARCHS
        names |= set(GGUF_ARCHS)
    except ImportError:
        pass
    return names - NOT_CAUSAL_GGUF


def _from_factory(source: str, trust_remote_code: bool, tokenizer: Any) -> Model:
    _need("transformers", "tokenizers", why="loading a language model")
    from transformers import PreTrainedModel

    from .load import _call_factory

    module = _call_factory(source)
    if not isinstance(module, PreTrainedModel) or not type(module).__name__.endswith("ForCausalLM"):
        raise UsageError(f"model factory {source} returned {type(module).__name__}, not a transformers causal LM "
                         "(*ForCausalLM)")
    given = tokenizer if tokenizer is not None else getattr(module, "tokenizer", None)
    if given is None:
        raise UsageError(f"model factory {source} returned a model without a tokenizer attribute; set "
                         "model.tokenizer in the factory or pass --tokenizer DIR")
    tok = _tokenizer(given, trust_remote_code)
    stem = source.rsplit(":", 1)[0]
    return lm_model(module.float(), tok, name=Path(stem).stem, loader="factory", origin=source, hf_dir=None)


def plain_copy(module):
    """The same weights in a plain model built from the config, without the quantizer transformers attaches when it
    reads a GGUF file (such a model refuses ``save_pretrained``)."""
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(module.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(module).__name__]
    plain = AutoModelForCausalLM.from_config(config, **fp32())
    result = plain.load_state_dict(module.state_dict(), strict=False)
    tied = set(getattr(plain, "_tied_weights_keys", None) or ())
    missing = [k for k in result.missing_keys if k not in tied and not k.endswith("lm_head.weight")]
    if missing or result.unexpected_keys:
        raise UsageError(f"the weights do not fit a plain {type(module).__name__}: missing {missing[:3]}, "
                         f"unexpected {result.unexpected_keys[:3]}")
    plain.tie_weights()
    return plain.eval()


def lm_model(module, tokenizer, *, name: str, loader: str, origin: str, hf_dir: Path | None,
             notes: list[str] | None = None, trust_remote_code: bool = False) -> Model:
    """Wrap a transformers causal LM and its tokenizer: run it once on a few tokens for the logits' width."""
    import torch

    module = module.eval()
    config = module.config.get_text_config() if hasattr(module.config, "get_text_config") else module.config
    ids = encode(tokenizer, "The quick brown fox jumps over the lazy dog.")[:8] or [0]
    example = np.asarray([ids], dtype=np.int64)
    try:
        with torch.no_grad():
            logits = module(input_ids=torch.from_numpy(example)).logits
    except Exception as exc:
        raise UsageError(f"model {origin} fails on {len(ids)} tokens: {one_line(exc)}") from None
    vocab = int(logits.shape[-1])
    spec = IOSpec(inputs=(TensorSpec("input_ids", ("batch", "sequence"), "int64"),),
                  outputs=(TensorSpec("logits", ("batch", "sequence", vocab), "float32"),))
    meta = {"architecture": type(module).__name__, "model_type": getattr(config, "model_type", None),
            "hf_dir": Path(hf_dir) if hf_dir is not None else None, "tokenizer": tokenizer,
            "chat_template": getattr(tokenizer, "chat_template", None) or None,
            "eos_token_ids": eos_ids(module, tokenizer), "bos_token_id": getattr(tokenizer, "bos_token_id", None),
            "pad_token_id": getattr(tokenizer, "pad_token_id", None),
            "context_length": int(getattr(config, "max_position_embeddings", 0) or 0) or None,
            "parameters": int(sum(p.numel() for p in module.parameters())), "vocab_size": vocab,
            "trust_remote_code": trust_remote_code, "notes": list(notes or [])}
    return Model(name=name, kind="causal-lm", loader=loader, origin=origin, iospec=spec,
                 example_inputs={"input_ids": example}, module=module, meta=meta)


def eos_ids(module, tokenizer) -> tuple[int, ...]:
    """Every id that ends generation: the generation config's, the config's and the tokenizer's EOS."""
    found: list[int] = []
    for value in (getattr(getattr(module, "generation_config", None), "eos_token_id", None),
                  getattr(module.config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(v, (int, np.integer)) and int(v) not in found:
                found.append(int(v))
    return tuple(found)


def hf_folder(model: Model, work_dir: str | Path) -> Path:
    """A Hugging Face folder for exporters: the source folder itself, or one written under ``work_dir``."""
    if model.meta.get("hf_dir") is not None:
        return Path(model.meta["hf_dir"])
    return save_hf_folder(model, Path(work_dir) / f"{model.name}-hf")


def save_hf_folder(model: Model, dest: str | Path) -> Path:
    """Write ``model`` as a clean Hugging Face folder: config, safetensors, generation config, tokenizer files and
    chat template. Written to a temporary sibling and renamed into place; ``dest`` must not exist yet."""
    dest = Path(dest)
    if dest.exists():
        raise UsageError(f"{dest} already exists; give a new folder to write the model to")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        module = model.module
        if getattr(module, "hf_quantizer", None) is not None or hasattr(module.config, "quantization_config"):
            module = plain_copy(module)
        module.save_pretrained(str(tmp))
        tokenizer = model.meta["tokenizer"]
        tokenizer.save_pretrained(str(tmp))
        template = model.meta.get("chat_template")
        if template and not (tmp / "chat_template.jinja").is_file() and not _has_template(tmp):
            (tmp / "chat_template.jinja").write_text(template, encoding="utf-8")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _has_template(folder: Path) -> bool:
    cfg = folder / "tokenizer_config.json"
    return cfg.is_file() and "chat_template" in json.loads(cfg.read_text(encoding="utf-8"))
