"""``edgekit nas``: parse, call ``edgekit.nas``, render. No logic lives here."""
from __future__ import annotations

import re
import sys
import time

import click

from ..core.errors import UsageError


def duration(text: str | None) -> float | None:
    """'90s', '10m', '1.5h' or plain seconds -> seconds."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--time-budget {text}: write a duration such as 600, 90s, 10m or 1.5h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def reference(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        metric, p90 = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--hv-ref {text}: write METRIC,P90_MS, e.g. 0.9,0.1") from None
    if p90 <= 0:
        raise UsageError(f"--hv-ref {text}: the p90 must be > 0")
    return metric, p90


FLAGS = {"time_budget_s": "--time-budget", "study": "--study", "promote_k": "--promote", "form": "--space-form",
         "hv_reference": "--hv-ref"}  # NasOptions' fields whose flag is not --FIELD-NAME


def nas_options(**values):
    """The command's one NasOptions; a bad value is named by its flag."""
    from ..archsearch.options import NasOptions, OptionError

    try:
        return NasOptions(**values)
    except OptionError as exc:
        flag = FLAGS.get(exc.option, "--" + exc.option.replace("_", "-"))
        raise UsageError(f"{flag} {exc.value}: {exc.why}") from None


@click.command("nas")
@click.option("--space", default="builtin", show_default=True,
              help="'builtin' (MobileNetV2-style) or FILE.py:FUNC, FUNC(trial) -> nn.Module.")
@click.option("--data", type=click.Path(), help=".npz with x/y (held out) and x_train/y_train (default: built-in digits).")
@click.option("--profile", "-p", default="iot", show_default=True, help="Built-in profile name or path to a .toml.")
@click.option("--trials", type=click.IntRange(min=1), help="The study's trial budget, shared by every worker.")
@click.option("--time-budget", help="Stop starting trials after this long (600, 90s, 10m, 1.5h); default with no --trials: 10m.")
@click.option("--storage", help="Optuna storage URL (default: sqlite in OUT/STUDY/study.db; journal:PATH for a file).")
@click.option("--study", "study_name", help="Study name (default: SPACE-PROFILE).")
@click.option("--out", default="nas", show_default=True, type=click.Path(), help="Parent folder of OUT/STUDY/.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--proxy-epochs", type=click.IntRange(min=1), default=3, show_default=True, help="Training per trial.")
@click.option("--final-epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Epochs of the full recipe that trains promoted members (12 left 16 px nets 1-3 points short).")
@click.option("--promote", "promote_k", type=click.IntRange(min=0), default=3, show_default=True,
              help="Front members re-trained and re-measured; 0: none, and no bundle (extra workers).")
@click.option("--pick", default="best", show_default=True,
              help="best (most accurate within every budget), fastest, smallest, or a trial number.")
@click.option("--grid", type=click.Choice(["auto", "full", "design", "baseline", "none"]), default="auto",
              show_default=True,
              help="Seed the study with the example's width x resolution grid (full), the example with the grid's "
                   "corners and centre (design), the example alone, or nothing; auto: full with a time budget "
                   "or --trials of at least twice the grid, else design.")
@click.option("--sampler", type=click.Choice(["auto", "tpe", "gp"]), default="auto", show_default=True,
              help="Optuna's multivariate TPE, or its Gaussian-process sampler (constrained expected hypervolume "
                   "improvement); auto: gp for the built-in space with --trials under twice the grid, else tpe.")
@click.option("--space-form", "form", type=click.Choice(["auto", "per-stage", "compound"]), default="auto",
              show_default=True,
              help="The built-in space per stage (depth, width, expansion, kernel of each stage: 19 parameters) or "
                   "compound (one depth, expansion and kernel for all stages: 6); auto: compound with --trials "
                   "under twice the grid, else per stage. A resumed study keeps its form.")
@click.option("--bits", type=click.Choice(["16", "8", "4"]), help="Override the profile's weight bits.")
@click.option("--threads", type=click.IntRange(min=0), help="Override the profile's thread count for benches.")
@click.option("--train-threads", type=click.IntRange(min=1), help="Threads for training (default: all cores).")
@click.option("--hv-ref", help="Hypervolume reference point METRIC,P90_MS (default: 0 and twice the seeded baseline's p90).")
def nas_cmd(space, data, profile, trials, time_budget, storage, study_name, out, seed, proxy_epochs, final_epochs,
            promote_k, pick, grid, sampler, form, bits, threads, train_threads, hv_ref):
    """Search architectures scored by their quantized file's metric and p90, measured in the target runtime."""
    from rich.console import Console
    from rich.table import Table

    from ..archsearch import nas

    options = nas_options(data=data, profile=profile, trials=trials, time_budget_s=duration(time_budget),
                          storage=storage, study=study_name, out=out, seed=seed, proxy_epochs=proxy_epochs,
                          final_epochs=final_epochs, promote_k=promote_k, pick=pick, grid=grid, sampler=sampler,
                          form=form, bits=int(bits) if bits else None, threads=threads, train_threads=train_threads,
                          hv_reference=reference(hv_ref))
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 150)
    start = time.time()

    def progress(event: dict) -> None:
        if event.get("event") == "promote":
            console.print(f"promote {event['index'] + 1}/{event['of']}: trial {event['trial']} with the full recipe")
            return
        if event.get("event") == "build":
            console.print(f"  build: {event['stage']}", style="dim")
            return
        values = event["values"]
        study = event["study"]
        done = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in ("COMPLETE", "PRUNED", "FAIL"))
        figures = f"metric {values[0]:.4f}  p90 {values[1]:.4f} ms" if values else event["state"].lower()
        best = _best(study)
        left = ""
        if event.get("budget_s"):
            left = f"  {max(0, event['budget_s'] - (time.time() - event['started'])) / 60:.1f} min left"
        console.print(f"trial {event['trial']:>3}: {figures:<34} done {done}{'/' + str(event['trials']) if event['trials'] else ''}"
                      f"  best feasible: {best}{left}")

    result = nas(space, options, progress=progress)
    table = Table(title=f"Pareto front of {result.study} (hypervolume {result.hypervolume:.4f} against "
                        f"{result.reference_point[0]:g}, {result.reference_point[1]:g} ms)")
    for col in ("trial", "metric", "p90 ms", "size KB", "arena KB", "resolution", "params"):
        table.add_column(col, justify="right")
    for p in result.front:
        table.add_row(str(p["trial"]), f"{p['metric']:.4f}", f"{p['p90_ms']:.4f}", f"{(p['bytes'] or 0) / 1024:.1f}",
                      f"{p['arena_bytes'] / 1024:.1f}" if p.get("arena_bytes") else "-", str(p.get("resolution") or "-"),
                      str(p.get("n_params") or "-"))
    out_console = Console(width=None if sys.stdout.isatty() else 150)
    out_console.print(table)
    if result.promoted:
        promoted = Table(title="promoted: proxy vs full recipe"
                         + (f" (Spearman {result.spearman:+.2f})" if result.spearman is not None else ""))
        for col in ("trial", "proxy metric", "final metric", "final p90 ms", "within budgets"):
            promoted.add_column(col, justify="right")
        for p in result.promoted:
            promoted.add_row(str(p["trial"]), f"{p['proxy_metric']:.4f}", f"{p['final_metric']:.4f}",
                             f"{p['final_p90_ms']:.4f}", "yes" if p["feasible"] else "no")
        out_console.print(promoted)
    click.echo(f"study: {result.storage} ({', '.join(f'{k.lower()} {v}' for k, v in result.counts.items())}; "
               f"{time.time() - start:.0f} s)")
    click.echo(f"outputs: {result.folder}/trials.csv, pareto.json, pareto.png")
    if result.bundle is not None:
        click.echo(f"bundle of trial {result.chosen}: {result.bundle} ({'PASS' if result.bundle_passed else 'FAIL'})")
    if not result.passed:  # the library gives the verdict; the exit code is the CLI's
        if result.missed:
            click.echo(f"edgekit: budget missed: {result.missed}", err=True)
        for gate in result.failed_gates:
            click.echo(f"edgekit: gate missed: {gate.describe()}", err=True)
        sys.exit(1)


def _best(study) -> str:
    from ..archsearch.results import feasible

    ok = [t for t in study.get_trials(deepcopy=False) if feasible(t)]
    if not ok:
        return "none yet"
    t = max(ok, key=lambda t: (t.values[0], -t.values[1]))
    return f"#{t.number} {t.values[0]:.4f} @ {t.values[1]:.4f} ms"
