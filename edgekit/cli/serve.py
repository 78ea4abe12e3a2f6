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
def serve_cmd(bundle, host, port, runtime, device, max_batch, max_delay_ms, queue, timeout_ms, cache_mb,
              cache_ttl_s, workers, threads, use_ray, replicas):
    """Serve BUNDLE over the KServe v2 / Open Inference Protocol (HTTP), as Triton clients expect."""
    options = dict(runtime=runtime, device=device, max_batch=max_batch, max_delay_ms=max_delay_ms, queue=queue,
                   timeout_ms=timeout_ms, cache_mb=cache_mb, cache_ttl_s=cache_ttl_s, workers=workers,
                   threads=threads)
    if use_ray:
        from ..serve.ray import run

        click.echo(f"edgekit serve: Ray Serve, {replicas} replica(s), on http://{host}:{port}/v2", err=True)
        run(bundle, host=host, port=port, replicas=replicas, **options)
        return
    from ..serve.app import App
    from ..serve.server import check_port, serve

    check_port(host, port)  # before the model loads: a taken port is the user's to change
    app = App(bundle, **options)
    m = app.model
    lines = [f"edgekit serve: {m.name} from {m.file.name} ({m.runtime}, {m.provider}, {m.precision})",
             f"  batching: {'dynamic, up to ' + str(max_batch) if m.batchable else m.why_unbatched}; queue {queue}; "
             f"timeout {timeout_ms:g} ms; cache {cache_mb:g} MB", *(f"  {n}" for n in m.notes)]
    click.echo("\n".join(lines), err=True)
    serve(app, host, port, on_ready=lambda: click.echo(f"ready: http://{host}:{port}/v2/models/{m.name}", err=True),
          on_exit=lambda summary: click.echo(f"edgekit serve: {summary}", err=True))


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
