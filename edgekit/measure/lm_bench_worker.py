"""Subprocess entry point of the LM bench: ``python -m edgekit.measure.lm_bench_worker '<json>'``.

Prints one JSON line. Imports only numpy and the runtime, so its RSS is the runtime's and the model's. The thread
count is set on the runtime's session in this process only.
"""
from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    import numpy as np

    from edgekit.core.errors import UsageError
    from edgekit.runtimes.device_runner import status_mb

    args = json.loads(argv[0])
    side = {"gguf": gguf_side, "openvino": openvino_side, "executorch": executorch_side}.get(args.get("format"),
                                                                                            genai_side)
    try:
        make, load = side(args)  # imports the runtime before the baseline, so the baseline holds it
        base = status_mb("VmRSS")
        runner = make()
        opened = time.perf_counter()
        vocab, eos, run = load(runner)
        load_ms = (time.perf_counter() - opened) * 1000
        loaded = status_mb("VmRSS")
        rng = np.random.default_rng(args["seed"])
        pool = np.array([t for t in range(vocab) if t not in eos], dtype=np.int32)
        timed, filled = measure(run, pool, rng, args)
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    return report(base, loaded, load_ms, timed, filled)


def genai_side(args: dict):
    """ONNX Runtime GenAI: its Generator, token by token."""
    import onnxruntime_genai  # noqa: F401

    from edgekit.runtimes.genai import GenaiRunner

    def load(runner):
        runner.model()
        return (runner.config.vocab_size, set(runner.config.eos_token_ids),
                lambda *a, **k: one_run(runner, *a, **k))

    return lambda: GenaiRunner(args["folder"], threads=args["threads"]), load


def gguf_side(args: dict):
    """A GGUF file in llama.cpp (llama-cpp-python), greedy decoding token by token."""
    import llama_cpp  # noqa: F401

    from edgekit.runtimes.llamacpp import LlamaRunner

    def load(runner):
        llm = runner.llm()
        return runner.facts.vocab_size, {int(llm.token_eos())}, lambda *a, **k: one_run_gguf(llm, *a, **k)

    return lambda: LlamaRunner(args["folder"], threads=args["threads"], context=args["context"]), load


def openvino_side(args: dict):
    """A stateful OpenVINO folder in openvino-genai's LLMPipeline, from its own timings."""
    import openvino_genai  # noqa: F401

    from edgekit.runtimes.openvino_lm import OvLmRunner

    def load(runner):
        runner.pipeline()
        return (runner.facts.vocab_size, set(runner.facts.eos_token_ids),
                lambda *a, **k: one_run_openvino(runner, *a, **k))

    return lambda: OvLmRunner(args["folder"], threads=args["threads"], context=args["context"]), load


def executorch_side(args: dict):
    """An ExecuTorch folder: its program stepped token by token (the prompt in one call or in chunks), XNNPACK's
    process-wide thread pool at the bench's threads."""
    from edgekit.runtimes.executorch import set_threads
    from edgekit.runtimes.executorch_lm import EtLmRunner, load_kernels

    load_kernels()
    set_threads(args["threads"])

    def load(runner):
        runner.method()
        return (runner.facts.vocab_size, set(runner.facts.eos_token_ids),
                lambda *a, **k: one_run_executorch(runner, *a, **k))

    return lambda: EtLmRunner(args["folder"], threads=args["threads"], context=args["context"]), load


def measure(run, pool, rng, args: dict) -> tuple[list[dict], dict]:
    """``warmup`` then ``runs`` timed runs, each of a fresh random prompt (openvino-genai's LLMPipeline caches KV
    blocks by content and would skip most of a repeated prompt's prefill), then a generation that fills the
    context, its prompt in chunks (a prompt's logits at every position are its peak)."""
    def prompt():
        return rng.choice(pool, size=args["prompt_tokens"])

    for _ in range(args["warmup"]):
        run(prompt(), args["new_tokens"])
    timed = [run(prompt(), args["new_tokens"]) for _ in range(args["runs"])]
    generate = min(args["new_tokens"], args["context"] - 1)
    filled = run(rng.choice(pool, size=args["context"] - generate), generate, chunk=args["prompt_tokens"])
    return timed, filled


def report(base: float, loaded: float, load_ms: float, timed: list[dict], filled: dict) -> int:
    from edgekit.runtimes.device_runner import status_mb

    result = {"base_rss_mb": base, "loaded_rss_mb": loaded, "peak_rss_mb": status_mb("VmHWM"), "load_ms": load_ms,
              "prefill_by_run": [r["prefill"] for r in timed], "decode_by_run": [r["decode"] for r in timed],
              "ttft_ms_by_run": [r["ttft_ms"] for r in timed], "context_decode_tokens_per_s": filled["decode"]}
    print(json.dumps(result))
    return 0


def one_run_openvino(runner, prompt, new_tokens: int, chunk: int | None = None) -> dict:
    """As ``one_run``, in openvino-genai: one generate() of exactly ``new_tokens`` (EOS ignored); its perf metrics
    give the time to first token (the prompt in one pass: LLMPipeline does not take it in pieces, so ``chunk`` is
    unused) and the time per later token."""
    tokens = runner.generate([int(t) for t in prompt], new_tokens, ignore_eos=True)
    if len(tokens) != new_tokens:
        raise RuntimeError(f"generated {len(tokens)} tokens, not {new_tokens}")
    perf = runner.last_perf
    ttft_ms = float(perf.get_ttft().mean)
    tpot_ms = float(perf.get_tpot().mean)
    return {"prefill": len(prompt) / (ttft_ms / 1000), "ttft_ms": ttft_ms,
            "decode": 1000.0 / tpot_ms if new_tokens > 1 and tpot_ms > 0 else float("nan")}


def one_run_executorch(runner, prompt, new_tokens: int, chunk: int | None = None) -> dict:
    """As ``one_run``, in ExecuTorch: exactly ``new_tokens`` greedy tokens (EOS ignored), the runner's own clock
    marks."""
    marks: dict = {}
    tokens = runner.generate([int(t) for t in prompt], new_tokens, ignore_eos=True, chunk=chunk, timings=marks)
    if len(tokens) != new_tokens:
        raise RuntimeError(f"generated {len(tokens)} tokens, not {new_tokens}")
    return {"prefill": len(prompt) / (marks["prefilled"] - marks["began"]),
            "ttft_ms": (marks["first"] - marks["began"]) * 1000,
            "decode": (new_tokens - 1) / (marks["end"] - marks["first"]) if new_tokens > 1 else float("nan")}


def one_run_gguf(llm, prompt, new_tokens: int, chunk: int | None = None) -> dict:
    """As ``one_run``, in llama.cpp: the prompt evaluated (in pieces of ``chunk`` tokens if given), the first token
    chosen from its last logits, then one evaluation and one choice per new token."""
    import numpy as np

    from edgekit.runtimes.llamacpp import last_logits

    llm.reset()
    tokens = [int(t) for t in prompt]
    step = chunk or len(tokens)
    start = time.perf_counter()
    for begin in range(0, len(tokens), step):
        llm.eval(tokens[begin:begin + step])
    prefilled = time.perf_counter()
    token = int(np.argmax(last_logits(llm)))
    first = time.perf_counter()
    made = 1
    while made < new_tokens:
        llm.eval([token])
        token = int(np.argmax(last_logits(llm)))
        made += 1
    end = time.perf_counter()
    return {"prefill": len(tokens) / (prefilled - start), "ttft_ms": (first - start) * 1000,
            "decode": (made - 1) / (end - first) if made > 1 else float("nan")}


def one_run(runner, prompt, new_tokens: int, chunk: int | None = None) -> dict:
    """Prefill tokens/s (append_tokens runs the prompt through the model, in pieces of ``chunk`` tokens if given),
    time to first token (the prefill and the choice of the first token) and decode tokens/s (each later token is
    one forward pass and a choice)."""
    generator = runner.generator(len(prompt), new_tokens, greedy=True, exact=True)
    step = chunk or len(prompt)
    start = time.perf_counter()
    for begin in range(0, len(prompt), step):
        generator.append_tokens(prompt[None, begin:begin + step])
    prefilled = time.perf_counter()
    generator.generate_next_token()
    generator.get_next_tokens()
    first = time.perf_counter()
    made = 1
    while made < new_tokens and not generator.is_done():
        generator.generate_next_token()
        generator.get_next_tokens()
        made += 1
    end = time.perf_counter()
    if made != new_tokens:
        raise RuntimeError(f"generated {made} tokens, not {new_tokens}")
    return {"prefill": len(prompt) / (prefilled - start), "ttft_ms": (first - start) * 1000,
            "decode": (made - 1) / (end - first) if made > 1 else float("nan")}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
