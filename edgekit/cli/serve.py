"""``edgekit serve`` and ``edgekit export triton``: parse, call edgekit.serve, print. No logic lives here."""
from __future__ import annotations

import click


@click.command("serve")
@click.argument("bundle", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--runtime", type=click.Choice(["auto", "onnxruntime", "litert"]), default="auto", show_default=True,
              help="auto: ONNX Runtime when the bundle has an ONNX file, else LiteRT.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "tensorrt"]), default="auto", show_default=True,
              help="auto: CUDA when a GPU and onnxruntime-gpu are present, else the CPU; never a silent fallback.")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True,
              help="Most samples in one batch (1 turns the batcher off).")
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Longest wait to fill a batch, only while another batch is running.")
@click.option("--queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests admitted and waiting; beyond it: 503 with Retry-After.")
@click.option("--timeout-ms", type=click.FloatRange(min=0, min_open=True), default=1000.0, show_default=True,
              help="A request not started by then is answered 504 and never run.")
@click.option("--cache-mb", type=click.FloatRange(min=0), default=64.0, show_default=True,
              help="Response cache budget (0 turns it off).")
@click.option("--cache-ttl-s", type=click.FloatRange(min=0, min_open=True), help="Cache entry lifetime.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Sessions, each running one batch at a time.")
@click.option("--threads", type=click.IntRange(min=0), help="Threads per session (default: the bundle's profile).")
@click.option("--ray", "use_ray", is_flag=True, help="Run as a Ray Serve deployment on a local Ray instance.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Serve replicas.")
@click.option("--file", "lm_file", help="LM bundles: the file (its folder name in the manifest) to serve instead of "
              "the recommended one.")
@click.option("--max-seqs", type=click.IntRange(min=1), default=8, show_default=True,
              help="LM bundles: sequences in the running batch (llama.cpp parallel sequences).")
@click.option("--max-batch-tokens", type=click.IntRange(min=1), default=512, show_default=True,
              help="LM bundles: tokens in one decode step (one per running sequence, then prompt chunks).")
@click.option("--context", type=click.IntRange(min=2), help="LM bundles: tokens per sequence, prompt and answer "
              "(default: the profile's context).")
@click.option("--max-tokens-in-flight", type=click.IntRange(min=1), help="LM bundles: cap on the prompt plus "
              "max_tokens of the admitted sequences; beyond it, 503 (default: 4x the KV cache's cells).")
@click.option("--no-prefix-cache", is_flag=True, help="LM bundles: compute every prompt from its first token.")
def serve_cmd(bundle, host, port, runtime, device, max_batch, max_delay_ms, queue, timeout_ms, cache_mb,
              cache_ttl_s, workers, threads, use_ray, replicas, lm_file, max_seqs, max_batch_tokens, context,
              max_tokens_in_flight, no_prefix_cache):
    """Serve BUNDLE over the KServe v2 / Open Inference Protocol (HTTP), as Triton clients expect.

    An LM bundle is served over the OpenAI-compatible API (/v1/chat/completions, /v1/completions, /v1/models) and
    KServe v2's generate extension, with continuous batching and a prefix cache.
    """
    options, lm = _split_options(bundle, click.get_current_context(), runtime=runtime, device=device,
                                max_batch=max_batch, max_delay_ms=max_delay_ms, queue=queue, timeout_ms=timeout_ms,
                                cache_mb=cache_mb, cache_ttl_s=cache_ttl_s, workers=workers, threads=threads,
                                file=lm_file, max_seqs=max_seqs, max_batch_tokens=max_batch_tokens, context=context,
                                max_tokens_in_flight=max_tokens_in_flight, prefix_cache=not no_prefix_cache)
    if use_ray:
        from ..serve.ray import run

        click.echo(f"edgekit serve: Ray Serve, {replicas} replica(s), on http://{host}:{port}", err=True)
        run(bundle, host=host, port=port, replicas=replicas, **options)
        return
    from ..serve.server import check_port, serve

    check_port(host, port)  # before the model loads: a taken port is the user's to change
    if lm:
        from ..serve.lm_app import LmApp

        app = LmApp(bundle, **options)
        m = app.lm
        lines = [f"edgekit serve: {m.name} from {m.entry['folder']} ({m.runtime}, {m.entry.get('precision')}), "
                 f"{m.threads} thread(s)",
                 f"  continuous batching: up to {options['max_seqs']} sequences of {m.context} tokens; "
                 f"prefix cache {'on' if options['prefix_cache'] else 'off'}; queue {options['queue']}; "
                 f"{app.scheduler.max_tokens} tokens in flight at most", *(f"  {n}" for n in m.notes)]
        ready = f"ready: http://{host}:{port}/v1 (OpenAI) and http://{host}:{port}/v2/models/{m.name}/generate"
    else:
        from ..serve.app import App

        app = App(bundle, **options)
        m = app.model
        lines = [f"edgekit serve: {m.name} from {m.file.name} ({m.runtime}, {m.provider}, {m.precision})",
                 f"  batching: {'dynamic, up to ' + str(max_batch) if m.batchable else m.why_unbatched}; "
                 f"queue {queue}; timeout {timeout_ms:g} ms; cache {cache_mb:g} MB", *(f"  {n}" for n in m.notes)]
        ready = f"ready: http://{host}:{port}/v2/models/{m.name}"
    click.echo("\n".join(lines), err=True)
    serve(app, host, port, on_ready=lambda: click.echo(ready, err=True),
          on_exit=lambda summary: click.echo(f"edgekit serve: {summary}", err=True))


# which options apply: a one-shot bundle takes the batcher's, an LM bundle the scheduler's; an option given
# for the other kind is refused in one line (exit 2), not ignored
ONE_SHOT = ("runtime", "device", "max_batch", "max_delay_ms", "timeout_ms", "cache_mb", "cache_ttl_s", "workers")
LM = ("file", "max_seqs", "max_batch_tokens", "context", "max_tokens_in_flight", "prefix_cache")
SHARED = ("queue", "threads")
CLI_NAMES = {"prefix_cache": "no_prefix_cache", "file": "lm_file"}


def _split_options(bundle, ctx, **given) -> tuple[dict, bool]:
    """The options for the bundle's app and whether it is an LM bundle; ``ctx`` (click's) tells which options the
    user gave."""
    from click.core import ParameterSource

    from ..core.errors import UsageError
    from ..serve.lm_model import is_lm_bundle

    lm = is_lm_bundle(bundle)
    own, foreign = (LM, ONE_SHOT) if lm else (ONE_SHOT, LM)

    def flag(key: str) -> str:
        return "--" + CLI_NAMES.get(key, key).replace("lm_", "").replace("_", "-")
    named = [k for k in foreign
             if ctx.get_parameter_source(CLI_NAMES.get(k, k)) not in (ParameterSource.DEFAULT, None)]
    if named:
        raise UsageError(f"{flag(named[0])} does not apply to {'an LM' if lm else 'a one-shot'} bundle; its "
                         f"options: {', '.join(flag(k) for k in own + SHARED)}")
    options = {k: v for k, v in given.items() if k in own + SHARED}
    if lm and ctx.get_parameter_source("queue") in (ParameterSource.DEFAULT, None):
        options["queue"] = 64
    return options, lm


@click.group("export")
def export_group():
    """Write a bundle in another serving system's layout."""


@export_group.command("triton")
@click.argument("bundle", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--max-delay-ms", type=click.FloatRange(min=0), default=2.0, show_default=True)
@click.option("--queue", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--timeout-ms", type=click.FloatRange(min=0, min_open=True), default=1000.0, show_default=True)
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--gpu", is_flag=True, help="KIND_GPU instances and the TensorRT accelerator at fp16.")
def export_triton(bundle, out, max_batch, max_delay_ms, queue, timeout_ms, instances, gpu):
    """A Triton model repository (config.pbtxt, 1/model.onnx) from BUNDLE's ONNX file, in OUT."""
    from ..serve.triton import write_repository

    folder = write_repository(bundle, out, max_batch=max_batch, max_delay_ms=max_delay_ms, queue=queue,
                              timeout_ms=timeout_ms, instances=instances, gpu=gpu)
    click.echo(f"wrote {folder}/config.pbtxt and {folder}/1/model.onnx")
