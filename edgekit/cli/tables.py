"""Small CLI helpers: `edgekit build`'s table, `edgekit bench --batch`'s sizes and per-batch table, `inspect`'s rows."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ..core.record import BuildRecord


def console(stderr: bool = True):
    """A rich console; pipes and CI logs get 150 columns, so tables are not squeezed into 80."""
    from rich.console import Console

    out = Console(stderr=stderr)
    return out if out.is_terminal else Console(stderr=stderr, width=150)


def print_build_table(record: BuildRecord) -> None:
    """`edgekit build`'s table: on a terminal, one line per file at the terminal's width; into a pipe or a CI
    log, the full rows as plain text, never wrapped."""
    from ..report.markdown import COLUMNS, table_rows, title
    from ..report.table import fit_table

    out = console(stderr=False)
    shown = fit_table(title(record), COLUMNS, table_rows(record), width=out.width, terminal=out.is_terminal)
    if out.is_terminal:
        out.print(shown)
    else:
        click.echo(shown)


def batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(b < 1 for b in sizes):
        raise click.BadParameter(f"{text!r}: give batch sizes >= 1, e.g. 32 or 1,8,16,32", param_hint="--batch")
    return sizes


def print_batches(rows) -> None:
    from rich.table import Table

    table = Table(title="throughput by batch size")
    for col in ("batch", "mode", "p50 ms", "p90 ms", "p99 ms", "samples/s"):
        table.add_column(col, justify="left" if col == "mode" else "right")
    for r in rows:
        table.add_row(str(r["batch"]), r["mode"], f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
                      f"{r['samples_per_s']:.0f}")
    console(stderr=False).print(table)


def inspect_rows(info: dict) -> list[tuple[str, str]]:
    """`edgekit inspect`'s rows: size, parameters, each input and output, ops and the format's own facts."""
    params = "inside the delegate's blob" if info["params"] is None else f"{info['params']:,}"
    rows = [("size", f"{info['bytes']} bytes"), ("parameters", params)]
    for kind in ("inputs", "outputs"):
        for t in info["iospec"][kind]:
            rows.append((kind[:-1], f"{t['name']} {t['shape']} {t['dtype']} {t['layout'] or ''}"))
    rows += [("ops", ", ".join(f"{op}×{n}" for op, n in info["ops"].items()))]
    return rows + [(k, str(v)) for k, v in info.items() if k in ("opset", "producer", "weight_precisions", "weights_file",
                                                                 "inference_precision_hint", "delegates",
                                                                 "non_delegated_ops")]
