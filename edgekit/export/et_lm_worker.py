"""ExecuTorch LM export, run as a script in optimum-executorch's own environment (``exporter_env``):
``python -I et_lm_worker.py '<json>'``. It imports nothing of edgekit (an editable edgekit is not on that
environment's path), only optimum-executorch, transformers, torchao and executorch.

optimum-executorch's ``load_causal_lm_model`` loads the Hugging Face folder (offline, no remote code) with a static
KV cache of ``max_seq_len`` tokens, ExecuTorch's custom SDPA and its custom KV-cache update; torchao's
``quantize_`` quantizes the weights as asked (the configs optimum-executorch's ``--qlinear``/``--qembedding`` use,
chosen here per module so the LM head can stay at 8 bits); optimum-executorch's XNNPACK recipe lowers the program
and writes the model's metadata as constant methods (max_seq_len, eos, vocab size). Prints one JSON line: the
weights' precisions per kind of module, the metadata and the seconds it took.

With ``"screen"`` in the arguments it exports nothing: for each set of options it quantizes a fresh copy of the model
the same way and prints the perplexity torch gets from it on the given windows (torchao's quantized tensors run in
eager mode), beside the unquantized model's: the ladder's forecast of which rungs are worth an export.
"""
from __future__ import annotations

import json
import sys
import time


def group_for(width: int, asked: int) -> int:
    """The largest power-of-two group <= ``asked`` that divides ``width`` (0: per channel when none >= 16 does)."""
    group = asked
    while group >= 16 and width % group:
        group //= 2
    return group if group >= 16 else 0


def quantize(model, options: dict) -> dict[str, int]:
    import torch
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        quantize_,
    )

    algorithm = options["qparams"]
    counts: dict[str, int] = {}

    def count(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    def linear_config(kind: str, group: int):
        granularity = PerAxis(0) if group == 0 else PerGroup(group)
        if kind == "8da4w":
            return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=granularity,
                                                         intx_choose_qparams_algorithm=algorithm)
        if kind == "8da8w":
            return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0),
                                                         intx_choose_qparams_algorithm=algorithm)
        raise ValueError(f"unknown linear kind {kind}")

    if options["embedding"] != "none":
        bits = torch.int8 if options["embedding"] == "8w" else torch.int4
        quantize_(model, IntxWeightOnlyConfig(weight_dtype=bits, granularity=PerAxis(0),
                                              intx_choose_qparams_algorithm=algorithm),
                  lambda m, fqn: isinstance(m, torch.nn.Embedding))
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                count(f"embedding {options['embedding']} per channel")
    head = model.get_output_embeddings()
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for name, module in linears:
        is_head = module is head
        kind = options["head"] if is_head and options["head"] != "same" else options["linear"]
        if kind == "fp32":
            count("lm_head fp32" if is_head else "linear fp32")
            continue
        group = group_for(module.in_features, options["group_size"]) if kind == "8da4w" else 0
        quantize_(model, linear_config(kind, group), lambda m, fqn, target=module: m is target)
        count(("lm_head " if is_head else "linear ") + kind + (f" g{group}" if group else " per channel"))
    return counts


def perplexity(model, windows) -> float:
    import math

    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for window in windows:
            ids = torch.as_tensor(window, dtype=torch.long)[None]
            logits = model(ids).logits[0, :-1].float()
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1
    return math.exp(total / count)


def screen(args: dict) -> int:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    began = time.perf_counter()
    windows = np.load(args["windows"])
    torch.set_num_threads(int(args.get("threads") or torch.get_num_threads()))

    def load():
        return AutoModelForCausalLM.from_pretrained(args["hf_dir"], dtype=torch.float32, local_files_only=True).eval()

    reference = perplexity(load(), windows)
    found = []
    for options in args["screen"]:
        model = load()
        quantize(model, options)
        found.append(perplexity(model, windows))
    print(json.dumps({"reference": reference, "perplexities": found, "seconds": time.perf_counter() - began}))
    return 0


def main(argv: list[str]) -> int:
    args = json.loads(argv[0])
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if "screen" in args:
        return screen(args)
    began = time.perf_counter()
    import optimum.exporters.executorch.convert  # noqa: F401 - registers the custom SDPA attention
    from optimum.exporters.executorch.recipes.xnnpack import export_to_executorch_with_xnnpack
    from optimum.exporters.executorch.tasks.causal_lm import load_causal_lm_model
    from torchao.utils import unwrap_tensor_subclass

    options = args["options"]
    phases: dict[str, float] = {}
    module = load_causal_lm_model(args["hf_dir"], dtype="float16" if options["linear"] == "fp16" else "float32",
                                  use_custom_sdpa=True, use_custom_kv_cache=True, max_seq_len=args["max_seq_len"])
    phases["load"] = time.perf_counter() - began
    counts: dict[str, int] = {}
    if options["linear"] not in ("fp32", "fp16"):
        counts = quantize(module.model, options)
        unwrap_tensor_subclass(module.model)
    else:
        counts = {f"linear {options['linear']}": sum(1 for m in module.model.modules()
                                                     if type(m).__name__ == "Linear")}
    phases["quantize"] = time.perf_counter() - began - sum(phases.values())
    programs = export_to_executorch_with_xnnpack(module)
    phases["export and lower"] = time.perf_counter() - began - sum(phases.values())
    program = programs["model"]
    with open(args["pte"], "wb") as f:
        program.write_to_file(f)
    metadata = {k: (v if isinstance(v, (int, float, bool, str)) else str(v)) for k, v in module.metadata.items()}
    print(json.dumps({"weights": counts, "metadata": metadata, "seconds": time.perf_counter() - began,
                      "phases": {k: round(v, 1) for k, v in phases.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
