"""Language-model commands: `edgekit bench` on an LM file (an ONNX Runtime GenAI folder, a GGUF) printing tokens/s,
time to first token and peak memory at a context as the one-shot bench prints its figures, and `edgekit setup
llama-cpp`."""
from __future__ import annotations

import json

import click


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
@click.argument("what", type=click.Choice(["llama-cpp"]))
@click.option("--sdist", type=click.Path(dir_okay=False, exists=True),
              help="A llama-cpp-python source distribution (.tar.gz) to take it from (default: pip download).")
def setup(what, sdist):
    """Install-time steps a build needs later, offline. llama-cpp: llama.cpp's converter (convert_hf_to_gguf.py),
    from the installed llama-cpp-python release's source distribution, into edgekit's cache."""
    from ..export.gguf import setup_converter

    setup_converter(sdist, progress=click.echo)
