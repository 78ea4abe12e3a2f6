"""Language-model commands: `edgekit bench` on an LM file (an ONNX Runtime GenAI folder, a GGUF, a stateful OpenVINO
folder, an ExecuTorch folder) printing tokens/s, time to first token and peak memory at a context as the one-shot
bench prints its figures, `edgekit validate` on one, and `edgekit setup llama-cpp optimum-intel optimum-executorch`."""
from __future__ import annotations

import json

import click


def is_lm_file(path: str) -> bool:
    """An ONNX Runtime GenAI folder, a .gguf file, a folder holding model.gguf, a stateful OpenVINO LM folder or an
    ExecuTorch LM folder."""
    from ..measure.lm_bench import gguf_file
    from ..runtimes.executorch_lm import is_executorch_lm_folder
    from ..runtimes.genai import is_genai_folder
    from ..runtimes.openvino_lm import is_openvino_lm_folder

    return (is_genai_folder(path) or gguf_file(path) is not None or is_openvino_lm_folder(path)
            or is_executorch_lm_folder(path))


def bench_lm_folder(folder: str, threads: int, runs: int, warmup: int, as_json: bool, unsupported: list[str]) -> None:
    """Time the folder with the LM bench's defaults (a 128-token prompt, 128 new tokens, 3 runs after 1 warm-up,
    the peak RSS at 2048 tokens or the model's context); ``--runs``/``--warmup`` given on the command line
    override them. ``unsupported``: the options given that an LM folder does not take."""
    from ..measure.lm_bench import bench_lm

    if unsupported:
        from ..core.errors import UsageError

        verb = "does" if len(unsupported) == 1 else "do"
        raise UsageError(f"{', '.join(unsupported)} {verb} not apply to a language model's folder yet (it is timed "
                         "on this machine, with token prompts)")
    source = click.get_current_context().get_parameter_source
    given = {n: source(n) == click.core.ParameterSource.COMMANDLINE for n in ("runs", "warmup")}
    r = bench_lm(folder, threads=threads, runs=runs if given["runs"] else 3, warmup=warmup if given["warmup"] else 1)
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
        return
    rows = [("runtime", r.runtime), ("threads", r.threads), ("runs", f"{r.runs} after {r.warmup} warm-up"),
            ("prefill", f"{r.prefill_tokens_per_s:.0f} tokens/s ({r.prompt_tokens}-token prompt)"),
            ("time to first token", f"{r.ttft_ms:.1f} ms"),
            ("decode", f"{r.decode_tokens_per_s:.1f} tokens/s ({r.new_tokens} tokens)"),
            ("peak RSS", f"{r.peak_rss_mb:.0f} MB at {r.context} tokens (runtime alone {r.base_rss_mb:.0f} MB, "
                         f"model loaded {r.loaded_rss_mb:.0f} MB)"),
            ("KV cache", f"{r.kv_cache_bytes / 1e6:.1f} MB at {r.context} tokens"),
            ("model", f"{r.model_bytes / 1e6:.1f} MB, loaded in {r.load_ms:.0f} ms"),
            ("CPU", f"{r.cpu.get('model')} ({', '.join(r.cpu.get('flags', [])) or 'flags not read'})")]
    width = max(len(k) for k, _ in rows)
    click.echo(f"edgekit bench {folder}")
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    for note in r.notes:
        click.echo(f"note: {note}")


@click.command()
@click.argument("what", nargs=-1, required=True, type=click.Choice(["llama-cpp", "optimum-intel", "optimum-executorch"]))
@click.option("--sdist", type=click.Path(dir_okay=False, exists=True),
              help="A llama-cpp-python source distribution (.tar.gz) to take it from (default: pip download).")
def setup(what, sdist):
    """Install-time steps a build needs later, offline. llama-cpp: llama.cpp's converter (convert_hf_to_gguf.py),
    from the installed llama-cpp-python release's source distribution, into edgekit's cache. optimum-intel:
    optimum-intel's exporter and the transformers release it supports, in an environment of their own in
    edgekit's cache (the OpenVINO LM format). optimum-executorch: the same for optimum-executorch's exporter (the
    ExecuTorch LM format)."""
    if sdist is not None and "llama-cpp" not in what:
        raise click.UsageError("--sdist is llama-cpp-python's source distribution: it goes with `setup llama-cpp`")
    if "llama-cpp" in what:
        from ..export.gguf import setup_converter

        setup_converter(sdist, progress=click.echo)
    if "optimum-intel" in what:
        from ..export.openvino_lm import EXPORTER

        EXPORTER.setup(progress=click.echo)
    if "optimum-executorch" in what:
        from ..export.executorch_lm import EXPORTER as ET_EXPORTER

        ET_EXPORTER.setup(progress=click.echo)


def validate_lm_file(file: str, model: str | None, data: str | None, threads: int, unsupported: list[str]) -> None:
    """`edgekit validate` on an LM file: its perplexity, KL and top-1 agreement on held-out windows of ``data``
    (default: the built-in held-out text) against the source ``model`` in torch fp32, and its greedy answers;
    exits 1 above the default budget (generate.max_ppl_increase, +5%)."""
    import sys

    from ..core.errors import UsageError
    from ..core.text import builtin_text, read_text, split_text
    from ..measure.lm_validate import greedy_answers, make_reference, quality, runner_for
    from ..pipeline.lm import load_lm
    from ..pipeline.options import BuildOptions
    from ..targets.profiles import Generate

    if unsupported:
        raise UsageError(f"{', '.join(unsupported)} do not apply to a language model's file")
    if not model:
        raise UsageError("a language model's file is judged against its source: give --model (a Hugging Face "
                         "folder, a .gguf file or FILE.py:FACTORY)")
    gen = Generate()
    text = read_text(data) if data else builtin_text("heldout")
    source = load_lm(model, BuildOptions(), None)
    runner_for(file, threads)  # a file its runtime cannot open fails here, before the reference is made
    split = split_text(text, source.meta["tokenizer"], context=gen.context, validation=gen.validation_windows,
                       calibration=1, prompts=gen.prompts)
    ref = make_reference(source, split.validation, split.prompts, gen.greedy_tokens)
    q = quality(file, ref, threads)
    answers = greedy_answers(file, ref, threads)
    rows = [("source perplexity (torch fp32)", f"{q.reference_perplexity:.4f}"), ("perplexity", f"{q.perplexity:.4f}"),
            ("increase", f"{q.ppl_increase:+.2%} (budget +{gen.max_ppl_increase:.0%})"), ("KL", f"{q.kl:.5f}"),
            ("top-1 agreement", f"{q.top1_agreement:.4f}"),
            ("windows", f"{q.windows} x {gen.context} tokens of {text.source}"),
            ("greedy answers identical", f"{sum(a.identical for a in answers)}/{len(answers)}"),
            ("stop where the source stops", f"{sum(a.stops_alike for a in answers)}/{len(answers)}")]
    width = max(len(k) for k, _ in rows)
    click.echo(f"edgekit validate {file}")
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    if q.ppl_increase > gen.max_ppl_increase:
        click.echo(f"edgekit: perplexity rose {q.ppl_increase:+.2%}, over +{gen.max_ppl_increase:.0%}", err=True)
        sys.exit(1)
