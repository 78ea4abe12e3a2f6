"""The command line: parse, call the public API, render. No logic lives here."""
from __future__ import annotations

import os
import sys

import click

from ..core.errors import EdgekitError
from .tables import console as _console


class _Group(click.Group):
    """Turns edgekit's typed errors into one line on stderr and their exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgekitError as exc:
            click.echo(f"edgekit: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("edgekit: interrupted; nothing was written", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("EDGEKIT_DEBUG"):
                raise
            click.echo(f"edgekit: internal error: {type(exc).__name__}: {exc} (set EDGEKIT_DEBUG=1 for the traceback)",
                       err=True)
            ctx.exit(3)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgekit")
def main() -> None:
    """Make a trained model fit a device: export, validate in the real runtime, measure, gate."""
    _quiet_process()


def _quiet_process() -> None:
    """The CLI owns its process, so it (not the library) keeps the terminal to edgekit's own output:
    the converters' deprecation warnings and torch.onnx's progress logging stay out of it."""
    import logging
    import warnings

    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("TORCH_LOGS", "-onnx")  # torch reads it at import, which comes later (lazily)
    # transformers' and huggingface_hub's progress bars (loading weights, de-quantizing a GGUF) and advisories
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # an export attempt that fails is logged by torch.export at ERROR with its stack; edgekit records it in
    # build.log and tries the next exporter, so it stays off the terminal
    for name in ("torch._guards", "torch._dynamo", "torch.fx.experimental.symbolic_shapes", "torch.export",
                 "torch.utils._pytree", "torchao"):  # torchao (imported by transformers) on optional kernels
        logging.getLogger(name).setLevel(logging.CRITICAL)
    logging.getLogger().addHandler(logging.NullHandler())  # ORT's quantizer warns on the root logger


@main.command()
@click.argument("model", required=False)
@click.option("--profile", "-p", default="iot", show_default=True, help="Built-in profile name or path to a .toml.")
@click.option("--weights", type=click.Path(), help="state_dict for a FILE.py:FACTORY model (loaded weights_only).")
@click.option("--data", type=click.Path(), help=".npz with arrays named after the inputs (or x) and optional y.")
@click.option("--out", default="out", show_default=True, type=click.Path(), help="Parent folder of the bundle.")
@click.option("--force", is_flag=True, help="Replace an existing bundle folder.")
@click.option("--task", type=click.Choice(["classification", "regression", "generic"]), help="Override task detection.")
@click.option("--formats", help="Comma-separated formats, e.g. onnx,tflite (default: the profile's).")
@click.option("--threads", type=click.IntRange(min=0), help="Override the profile's thread count (0 = all cores).")
@click.option("--calib-samples", type=click.IntRange(min=1), help="Samples for calibration (default: 25%, at most 256).")
@click.option("--val-samples", type=click.IntRange(min=1), help="Samples for validation (default: the rest).")
@click.option("--trust-pickle", is_flag=True, help="Allow loading full-model pickles (runs code from the file).")
@click.option("--bits", type=click.Choice(["32", "16", "8", "4"]), help="Override the profile's weight bits.")
@click.option("--calibration", type=click.Choice(["minmax", "entropy", "percentile"]),
              help="ONNX calibration method (TFLite always uses the representative dataset).")
@click.option("--int8-io", is_flag=True, help="Integer TFLite files take and return int8 (for MCUs).")
@click.option("--fp16-io", is_flag=True, help="fp16 ONNX files take and return fp16 (default: fp32 I/O kept).")
@click.option("--prune-ratio", type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Pruning ceiling: the search backs off from here until the accuracy budget holds.")
@click.option("--prune-method", type=click.Choice(["structured", "unstructured", "none"]),
              help="Structured channel pruning (smaller, faster graph) or unstructured (zip size only).")
@click.option("--lowrank", type=click.FloatRange(0.0, 1.0, max_open=True),
              help="SVD energy to keep when factorizing Linear/1x1 conv layers, e.g. 0.9 (0 = off).")
@click.option("--share-bits", type=click.IntRange(0, 8), help="k-means weight sharing into 2^K values per layer (0 = off).")
@click.option("--keep", multiple=True, metavar="NAME", help="A layer (module name) never pruned; repeatable.")
@click.option("--output-task", "output_task", metavar="NAME=TASK[,NAME=TASK]",
              help="How an output is judged: distribution, probability[:THRESHOLD] or regression "
                   "(default: inferred from the source's outputs), e.g. prob=probability:0.6,box=regression.")
@click.option("--dynamic", metavar="INPUT=AXES[;INPUT=AXES]",
              help="Input axes that stay dynamic in the ONNX file, e.g. image=batch,2,3 (TFLite and the C "
                   "array fix them to the data's size).")
@click.option("--static-shape", "static_shape", metavar="AXIS=SIZE[,AXIS=SIZE]",
              help="The size TFLite and the C array fix a dynamic axis to, e.g. time=64 (default: the data's); "
                   "the data is cut to it.")
@click.option("--device", metavar="URL", help="Validate and bench every file the device runs there (default: the profile's target.device): ssh://USER@HOST[:PORT] or adb:SERIAL "
              "(options: ?python=PATH&identity=KEYFILE&known_hosts=FILE).")
@click.option("--accept-host-key", is_flag=True, help="Record an unknown SSH host key in known_hosts (never a changed one).")
@click.option("--labels", type=click.Path(dir_okay=False), metavar="FILE",
              help="Class names for the manifest: a JSON list or one label per line (apps map outputs with them).")
@click.option("--preprocessing", type=click.Path(dir_okay=False), metavar="RECIPE.json",
              help="The preprocessing recipe apps apply (scale, resize, normalize; apps/README.md).")
@click.option("--strict-gates", "strict_gates", flag_value=True, default=None,
              help="Exit 1 when any file misses any gate (default: when a requested format has no file that meets "
                   "every gate; budget.strict_gates in the profile sets it too).")
@click.option("--trust-remote-code", is_flag=True,
              help="A language model whose config.json names code in its folder may run that code (off: refused).")
@click.option("--example", type=click.Choice(["digits", "tinylm"]),
              help="With no MODEL: the built-in example to build (default digits; tinylm is a small language model, "
                   "trained on first use).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of the table.")
def build(model, profile, weights, data, out, force, task, formats, threads, calib_samples, val_samples,
          trust_pickle, bits, calibration, int8_io, fp16_io, prune_ratio, prune_method, lowrank, share_bits, keep,
          output_task, dynamic, static_shape, device, accept_host_key, labels, preprocessing, strict_gates,
          trust_remote_code, example, as_json):
    """Build a validated, measured bundle for MODEL (default: the built-in digits example).

    MODEL is FILE.py:FACTORY, package.module:FACTORY, a torch.export .pt2, a TorchScript
    .pt, an .onnx file, a .keras file or a SavedModel folder; or a language model: a Hugging
    Face folder (config.json, *.safetensors, tokenizer) or a llama.cpp .gguf file, judged on
    --data text (.txt or .jsonl; default: built-in held-out text) by perplexity and timed in
    tokens/s. Exits 1 when a requested format has no file that meets every gate of the profile
    (with --strict-gates: when any file misses one).
    """
    from ..pipeline.build import build as run_build
    from ..pipeline.options import BuildOptions
    from ..targets.formats import parse_formats

    options = BuildOptions(profile=profile, weights=weights, data=data, out=out, force=force, task=task,
                           formats=parse_formats(formats) if formats is not None else None, trust_pickle=trust_pickle,
                           calib_samples=calib_samples, val_samples=val_samples, threads=threads,
                           bits=int(bits) if bits else None, calibration=calibration, int8_io=int8_io, fp16_io=fp16_io,
                           prune_ratio=prune_ratio, prune_method=prune_method, lowrank=lowrank, share_bits=share_bits,
                           keep=tuple(keep) or None, output_tasks=_output_tasks(output_task),
                           dynamic=_dynamic_axes(dynamic), static_shape=_static_shape(static_shape), device=device,
                           accept_host_key=accept_host_key, labels=labels, preprocessing=preprocessing,
                           strict_gates=strict_gates, trust_remote_code=trust_remote_code, example=example)
    if model is not None and example is not None:
        raise click.UsageError("give MODEL or --example, not both")
    console = _console()
    with console.status("starting", spinner="dots") as status:
        result = run_build(model, options, progress=lambda stage: status.update(f"[bold]{stage}[/]"))
    from .summary import finish_build

    finish_build(result, as_json)

@main.command()
@click.argument("file", type=click.Path())
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=20, show_default=True)
@click.option("--batch", default="32", show_default=True, metavar="N[,N...]",
              help="Batch for the throughput run (1 skips it); a list, e.g. 1,8,16,32, prints latency and samples/s "
              "per batch size (a file with a fixed batch of 1 answers each as sequential runs).")
@click.option("--data", type=click.Path(), help=".npz whose first sample is timed (default: synthetic inputs).")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Every round of timed runs lasts at least this long (MLPerf Mobile uses 60).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Rounds of timed runs; their samples are pooled and each round's p50 is shown.")
@click.option("--device", metavar="URL", help="Run it on a device: ssh://USER@HOST[:PORT] or adb:SERIAL "
              "(options: ?python=PATH&identity=KEYFILE&known_hosts=FILE).")
@click.option("--accept-host-key", is_flag=True, help="Record an unknown SSH host key in known_hosts (never a changed one).")
@click.option("--benchmark-binary", type=click.Path(), help="With --device, on a device without Python: your own "
              "benchmark_model (for .tflite) or onnxruntime_perf_test (for .onnx) binary, pushed and parsed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench(file, threads, runs, warmup, batch, data, min_seconds, repeat, device, accept_host_key, benchmark_binary,
          as_json):
    """Time FILE in its own runtime: p50/p90/p99, throughput, peak RSS (on a device with --device). A language
    model (an ONNX Runtime GenAI folder, a .gguf file or a folder with model.gguf): prefill and decode tokens/s,
    time to first token, peak RSS at a context."""
    import json

    from .lm import bench_lm_folder, is_lm_file

    if is_lm_file(file):
        return bench_lm_folder(file, threads, runs, warmup, as_json, [n for n, v in (
            ("--device", device), ("--benchmark-binary", benchmark_binary), ("--data", data)) if v])
    from ..measure.bench import bench_file
    from ..core.data import read_arrays

    inputs = {k: v[:1] for k, v in read_arrays(data).items()} if data else None
    from .tables import batch_sizes, print_batches

    sizes = batch_sizes(batch)
    batch, batches = max(sizes), (tuple(sizes) if len(sizes) > 1 else ())
    if benchmark_binary and not device:
        raise click.UsageError("--benchmark-binary needs --device")
    if benchmark_binary:
        from ..device.remote import bench_with_binary
        r = bench_with_binary(file, device, benchmark_binary, threads=threads, runs=runs, warmup=warmup,
                              min_seconds=min_seconds, accept_host_key=accept_host_key)
    elif device:
        from ..device import bench_on_device
        r = bench_on_device(file, device, threads=threads, runs=runs, warmup=warmup, min_seconds=min_seconds,
                            repeat=repeat, inputs=inputs, accept_host_key=accept_host_key)
    else:
        r = bench_file(file, threads=threads, runs=runs, warmup=warmup, batch=batch, inputs=inputs,
                       min_seconds=min_seconds, repeat=repeat, batches=batches)
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=2))
        return
    rows = [("measured on", r.measured_on), ("runtime", r.runtime + (f" {r.device['runtime_version']}" if r.device
                                                                     else "")),
            ("threads", r.threads), ("runs", f"{r.runs} after {r.warmup} warm-up"),
            ("p50 / p90 / p99", f"{_ms(r.p50_ms)} / {_ms(r.p90_ms)} / {_ms(r.p99_ms)} ms"),
            ("mean ± std", f"{_ms(r.mean_ms)} ± {_ms(r.std_ms)} ms"), ("throughput b1", f"{r.throughput_b1:.0f}/s"),
            ("throughput", f"{r.throughput_batch:.0f}/s at batch {r.batch}" if r.batch else
             "batch 1 only on a device" if r.device else "fixed batch: n/a"),
            ("init / first run", f"{_ms(r.init_ms, 1)} / {_ms(r.first_run_ms)} ms"),
            ("peak RSS", f"{r.peak_rss_mb:.1f} MB" + (f" (+{r.rss_growth_mb:.1f} MB for the model)"
                                                     if r.rss_growth_mb is not None else "") if r.peak_rss_mb else "n/a"),
            ("file size", f"{r.file_bytes} bytes"), ("CPU", f"{r.cpu.get('model')} ({', '.join(r.cpu.get('flags', [])) or 'flags not read'})")]
    if r.device:
        rows.insert(1, ("device", f"{r.device['uname_m']}, {r.device['cpu'].get('cores')} cores"))
    _print_pairs(f"edgekit bench {file}", rows)
    if r.by_batch:
        print_batches(r.by_batch)
    for note in r.notes:
        click.echo(f"note: {note}")


@main.command()
@click.argument("file", type=click.Path())
@click.option("--model", help="Reference model (same forms as build; default: the built-in example).")
@click.option("--weights", type=click.Path())
@click.option("--data", type=click.Path())
@click.option("--task", type=click.Choice(["classification", "regression", "generic"]))
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--trust-pickle", is_flag=True)
@click.option("--device", metavar="URL", help="Run it on a device: ssh://USER@HOST[:PORT] or adb:SERIAL "
              "(options: ?python=PATH&identity=KEYFILE&known_hosts=FILE).")
@click.option("--accept-host-key", is_flag=True, help="Record an unknown SSH host key in known_hosts (never a changed one).")
@click.option("--save-outputs", type=click.Path(dir_okay=False), metavar="OUT.npz",
              help="Write the file's outputs on the validation split by output name, with 'labels' and 'index' (the "
              "samples' positions in the data file).")
def validate(file, model, weights, data, task, threads, trust_pickle, device, accept_host_key, save_outputs):
    """Run FILE in its runtime on the data and compare it with the reference model (on a device too, with
    --device: the host's and the device's figures side by side). Exits 1 when FILE misses its tolerance."""
    from ..pipeline.validate_file import validate_against, validate_on_device
    from .lm import is_lm_file, validate_lm_file

    if is_lm_file(file):
        return validate_lm_file(file, model, data, threads, [n for n, v in (("--weights", weights), ("--task", task),
                                ("--device", device), ("--save-outputs", save_outputs)) if v])
    if device:
        host, there, side = validate_on_device(file, device, model=model, weights=weights, data=data, task=task,
                                               threads=threads, trust_pickle=trust_pickle,
                                               accept_host_key=accept_host_key)
        _print_side_by_side(file, host, there, side)
        for f in there.failures:
            click.echo(f"edgekit: {there.measured_on}: {f}", err=True)
        sys.exit(1 if there.failures else 0)
    v = validate_against(file, model=model, weights=weights, data=data, task=task, threads=threads,
                         trust_pickle=trust_pickle, save_outputs=save_outputs)
    rows = [(k, f"{val:.6g}") for k, val in v.metrics.items()] + [("metric drop", f"{v.drop:+.4f}")]
    rows += [(f"output {n}", f"max |diff| {o.get('max_abs_diff', float('nan')):.3g}") for n, o in v.outputs.items()]
    _print_pairs(f"edgekit validate {file} ({v.runtime})", rows)
    for f in v.failures:
        click.echo(f"edgekit: {f}", err=True)
    sys.exit(1 if v.failures else 0)


def _ms(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _print_side_by_side(file, host, there, side) -> None:
    rows = [(k, f"{host.metrics[k]:.6g} | {there.metrics.get(k, float('nan')):.6g}") for k in host.metrics]
    rows += [("metric drop", f"{host.drop:+.4f} | {there.drop:+.4f}")]
    rows += [(f"output {n} vs host", f"max |diff| {d:.3g}") for n, d in side.get("max_abs_diff_vs_host", {}).items()]
    _print_pairs(f"edgekit validate {file} ({there.runtime}): host | {there.measured_on}", rows)
    if not side.get("within_tolerance_of_host", True):
        click.echo(f"warning: the outputs on {there.measured_on} differ from the host's beyond the format's tolerance",
                   err=True)


@main.command()
@click.argument("file", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def inspect(file, as_json):
    """Print the ops, parameters, size and IO of an ONNX, TFLite, OpenVINO (.xml) or ExecuTorch (.pte) FILE."""
    import json

    from ..measure.inspect import inspect_file

    info = inspect_file(file)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    from .tables import inspect_rows

    _print_pairs(f"edgekit inspect {file}", inspect_rows(info))


@main.group(invoke_without_command=True)
@click.pass_context
def profiles(ctx):
    """List the built-in device profiles."""
    if ctx.invoked_subcommand is None:
        from ..targets.profiles import list_profiles

        rows = [(p.name, f"{p.description} [extends {p.extends}]" if p.extends else p.description)
                for p in list_profiles()]
        _print_pairs("device profiles", rows)


@profiles.command("show")
@click.argument("name")
def profiles_show(name):
    """Print a resolved profile (NAME or path to a .toml)."""
    import json

    from ..targets.profiles import load_profile

    click.echo(json.dumps(load_profile(name).to_dict(), indent=2))


def _pairs(text: str | None, flag: str, form: str, sep: str = ",") -> list[tuple[str, str]]:
    """'a=x,b=y' -> [('a', 'x'), ('b', 'y')]; a part without NAME= is a usage error showing ``form``."""
    from ..core.errors import UsageError

    out = []
    for part in filter(None, (p.strip() for p in (text or "").split(sep))):
        name, eq, value = part.partition("=")
        if not eq or not name or not value:
            raise UsageError(f"{flag} {part!r}: write {form}")
        out.append((name, value))
    return out


def _output_tasks(text: str | None) -> dict[str, str] | None:
    """'prob=probability:0.6,box=regression' -> {'prob': 'probability:0.6', 'box': 'regression'}."""
    from ..core.errors import UsageError
    from ..core.metrics import parse_output_task

    out = {}
    for name, task in _pairs(text, "--output-task", "NAME=TASK, e.g. prob=probability:0.6"):
        try:
            parse_output_task(task)
        except ValueError as exc:
            raise UsageError(f"--output-task {name}: {exc}") from None
        out[name] = task
    return out or None


def _static_shape(text: str | None) -> dict[str, int] | None:
    """'time=64,height=96' -> {'time': 64, 'height': 96}."""
    from ..core.errors import UsageError

    form = "AXIS=SIZE with a positive size, e.g. time=64"
    out = {}
    for name, size in _pairs(text, "--static-shape", form):
        if not size.isdigit() or int(size) < 1:
            raise UsageError(f"--static-shape {name}={size}: write {form}")
        out[name] = int(size)
    return out or None


def _dynamic_axes(text: str | None) -> dict | None:
    """'image=batch,2,3' -> {'image': {0: 'batch', 2: 'image_dim2', 3: 'image_dim3'}}."""
    from ..core.errors import UsageError

    form = "INPUT=AXES with axis numbers, e.g. image=batch,2,3"
    out = {}
    for name, axes in _pairs(text, "--dynamic", form, sep=";"):
        try:
            out[name] = {0 if a.strip() == "batch" else int(a): "batch" if a.strip() in ("batch", "0")
                         else f"{name}_dim{int(a)}" for a in axes.split(",") if a.strip()}
        except ValueError:
            raise UsageError(f"--dynamic {name}={axes}: write {form}") from None
    return out or None


def _print_pairs(title: str, rows) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(escape(str(key)), escape(str(value)))
    _console(stderr=False).print(table)


def _add_commands() -> None:
    from .lm import setup
    from .nas import nas_cmd
    from .serve import export_group, serve_cmd

    main.add_command(setup)
    main.add_command(serve_cmd)
    main.add_command(export_group)
    main.add_command(nas_cmd)


_add_commands()
