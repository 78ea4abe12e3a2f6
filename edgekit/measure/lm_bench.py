"""The LM bench: prefill and decode tokens/s, time to first token, peak RSS at a context length, bytes.

``bench_lm`` spawns ``python -m edgekit.measure.lm_bench_worker`` so the peak RSS is the model's own process and
the thread count is that process's alone. It times ONNX Runtime GenAI folders (onnxruntime-genai's Generator),
GGUF files (llama.cpp through llama-cpp-python, greedy token by token), stateful OpenVINO folders (openvino-genai's
LLMPipeline and its own timings) and ExecuTorch folders (the program stepped token by token, XNNPACK's thread pool at
the bench's threads), as an app runs them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.errors import UsageError
from ..core.lm_results import LmBench

__all__ = ["LmBench", "bench_lm", "kv_cache_bytes"]

NOISY_SPREAD = 0.25  # (max - min) / median of the timed runs above this: the machine was busy


def bench_lm(folder: str | Path, *, threads: int = 1, prompt_tokens: int = 128, new_tokens: int = 128,
             context: int | None = None, runs: int = 3, warmup: int = 1, seed: int = 0) -> LmBench:
    """Time the LM ``folder`` in its runtime in a fresh process. ``context`` (default: 2048, or the model's
    context if shorter) is the length the peak-RSS generation fills."""
    from ..runtimes.executorch_lm import is_executorch_lm_folder
    from ..runtimes.genai import GenaiRunner, folder_bytes, is_genai_folder, require_genai
    from ..runtimes.openvino_lm import is_openvino_lm_folder
    from .bench import cpu_info, run_worker

    folder = Path(folder)
    gguf = gguf_file(folder)
    if gguf is not None:
        from ..runtimes.llamacpp import RUNTIME, GgufFacts, require_llamacpp

        require_llamacpp()
        facts = GgufFacts.read(gguf)
        model_context, kind = facts.context_length, "gguf"
    elif is_openvino_lm_folder(folder):
        from ..runtimes.openvino_lm import RUNTIME, OvLmFacts, require_ov_genai

        require_ov_genai()
        ov_facts = OvLmFacts.read(folder)
        model_context, kind = ov_facts.context_length, "openvino"
    elif is_executorch_lm_folder(folder):
        from ..runtimes.executorch_lm import RUNTIME, EtLmFacts, require_executorch_lm

        require_executorch_lm()
        et_facts = EtLmFacts.read(folder)
        model_context, kind = et_facts.context_length, "executorch"
    elif is_genai_folder(folder):
        from ..runtimes.genai import RUNTIME

        require_genai()
        model_context, kind = GenaiRunner(folder).config.context_length, "onnxruntime-genai"
    else:
        raise UsageError(f"{folder}: not an LM folder: no ONNX Runtime GenAI genai_config.json, no GGUF model.gguf, "
                         "no OpenVINO openvino_model.xml with openvino_tokenizer.xml and no ExecuTorch model.pte "
                         "with its edgekit_export.json")

    context = min(2048, model_context) if context is None else context
    for name, value, low in (("threads", threads, 1), ("prompt_tokens", prompt_tokens, 1),
                             ("new_tokens", new_tokens, 2), ("runs", runs, 1), ("warmup", warmup, 0),
                             ("context", context, 2)):
        if value < low:
            raise UsageError(f"LM bench {name} must be >= {low}, got {value}")
    if prompt_tokens + new_tokens > model_context:
        raise UsageError(f"a prompt of {prompt_tokens} tokens plus {new_tokens} new ones is longer than the model's "
                         f"context ({model_context})")
    if context > model_context:
        raise UsageError(f"context {context} is longer than the model's ({model_context})")
    args = {"folder": str((gguf or folder).resolve()), "format": kind, "threads": threads, "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens, "context": context, "runs": runs, "warmup": warmup, "seed": seed}
    load = os.getloadavg()[0]  # other work on the machine before this bench started
    raw = run_worker("edgekit.measure.lm_bench_worker", args, threads, folder, "cannot be timed")
    prefill, decode, ttft = raw.pop("prefill_by_run"), raw.pop("decode_by_run"), raw.pop("ttft_ms_by_run")
    return LmBench(folder=str(folder), runtime=RUNTIME, threads=threads, prompt_tokens=prompt_tokens,
                   new_tokens=new_tokens, context=context, runs=runs, warmup=warmup,
                   prefill_tokens_per_s=float(np.median(prefill)), decode_tokens_per_s=float(np.median(decode)),
                   ttft_ms=float(np.median(ttft)), model_bytes=folder_bytes(folder) if folder.is_dir() else folder.stat().st_size,
                   kv_cache_bytes=(facts.kv_cache_bytes(context) if gguf is not None else
                                   ov_facts.kv_cache_bytes(context, folder) if kind == "openvino" else
                                   et_facts.kv_cache_bytes(context) if kind == "executorch" else
                                   kv_cache_bytes(folder, context)), prefill_by_run=tuple(prefill),
                   decode_by_run=tuple(decode), ttft_ms_by_run=tuple(ttft), cpu=cpu_info(),
                   notes=tuple(noise_notes({"prefill": prefill, "decode": decode, "time to first token": ttft},
                                           load, os.cpu_count() or 1)),
                   **raw)


def gguf_file(path: str | Path) -> Path | None:
    """The GGUF file of ``path`` (the file itself, or a folder's model.gguf), else None."""
    path = Path(path)
    if path.suffix == ".gguf" and path.is_file():  # a bare .gguf: its bytes are the file's alone
        return path
    return path / "model.gguf" if (path / "model.gguf").is_file() else None


def kv_cache_bytes(folder: str | Path, context: int) -> int:
    """2 x layers x KV heads x head size x context x the past tensors' element size (from the graph)."""
    import onnx

    from ..runtimes.genai import GenaiConfig

    folder = Path(folder)
    config = GenaiConfig.read(folder)
    graph = onnx.load(str(folder / config.filename), load_external_data=False).graph
    past = config.past_key % 0
    dtype = next((i.type.tensor_type.elem_type for i in graph.input if i.name == past), onnx.TensorProto.FLOAT)
    size = {onnx.TensorProto.FLOAT16: 2, onnx.TensorProto.BFLOAT16: 2, onnx.TensorProto.INT8: 1,
            onnx.TensorProto.UINT8: 1}.get(dtype, 4)
    return 2 * config.layers * config.kv_heads * config.head_size * context * size


def noise_notes(by_run: dict[str, list[float]], load: float = 0.0, cores: int = 1) -> list[str]:
    notes = [f"busy machine: its load average was {load:.1f} on {cores} cores when the bench began"] \
        if load > 0.5 * cores else []
    for name, values in by_run.items():
        median = float(np.median(values))
        if len(values) > 1 and median > 0 and (max(values) - min(values)) / median > NOISY_SPREAD:
            notes.append(f"noisy machine: {name} varied {min(values):.4g}-{max(values):.4g} over "
                         f"{len(values)} runs; rerun on an idle machine for firm numbers")
    if len(next(iter(by_run.values()), ())) < 3:
        notes.append("fewer than 3 timed runs: the medians are rough")
    return notes
