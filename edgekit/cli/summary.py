"""What ``edgekit build`` prints after a build, rendered from the BuildRecord."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..measure.recommend import TIE
from .tables import print_build_table

if TYPE_CHECKING:
    from ..core.record import BuildRecord


def print_build(record: BuildRecord) -> None:
    """The summary a person reads after a build: the table, the picks, compression, what was not made, notes."""
    print_build_table(record)  # one line per file: narrowed on a terminal, full rows into a pipe
    for rec in record.recommended:
        flagged = f"; slower than fp32, not recommended: {', '.join(rec.slower_than_fp32)}" \
            if rec.slower_than_fp32 else ""
        click.echo(f"  recommended for {rec.runtime}: {rec.file} ({rec.why}{flagged})")
    f = record.fastest
    if f is not None and len({a.runtime for a in record.artifacts if a.bench}) > 1:
        tied = f"; the smaller of the files within {TIE:.0%}: {', '.join(f.tied_with)}" if f.tied_with else ""
        click.echo(f"  fastest for the target: {f.file} ({f.runtime}, {f.p50_ms:.3f} ms p50, on {f.cpu}{tied})")
    comp = record.compression
    if comp and comp.get("after") and comp.get("applied") is False:
        click.echo(f"  compression: nothing applied ({len(comp['attempts'])} attempts); the graph is unchanged")
    elif comp and comp.get("after"):
        r = comp["ratios"]
        macs = f"{r['macs']:.2f}x fewer MACs" if r["macs"] == r["macs"] else "MACs not counted (ops without a MAC rule)"
        click.echo(f"  compression: {comp['settings']['method']} at ratio {comp['ratio']:.2f} "
                   f"({len(comp['attempts'])} attempts): fp32 graph {r['params']:.2f}x fewer params, "
                   f"{macs}, {r['speedup_p50']:.2f}x the speed (ONNX Runtime p50, one run each)")
    for failure in record.failures:
        click.echo(f"  not made: {failure.format} {failure.precision} ({failure.stage}): {failure.reason[:300]}")
    for line in list(record.pending) + [n.text for n in record.notes]:
        click.echo(f"  {line}")
    if record.verdict.shipped_despite:
        click.echo(f"  missed a gate, kept and never recommended: {', '.join(record.verdict.shipped_despite)}")
    click.echo(f"bundle: {record.bundle}")
