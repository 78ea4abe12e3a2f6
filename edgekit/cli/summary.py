"""What ``edgekit build`` prints after a build, rendered from the BuildRecord."""
from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..measure.recommend import TIE
from .tables import print_build_table

if TYPE_CHECKING:
    from ..core.record import BuildRecord
    from ..pipeline.build import BuildResult
    from ..pipeline.lm import LmBuildResult


def finish_build(result: BuildResult | LmBuildResult, as_json: bool) -> None:
    """Print the build's summary (or report.json's content), then exit 1 with the reasons when it did not pass."""
    import json
    import sys

    from ..pipeline.lm import LmBuildResult

    if as_json:
        click.echo(json.dumps(result.record.to_report(), indent=2))
    elif isinstance(result, LmBuildResult):
        print_lm_build(result)
    else:
        print_build(result.record)
    if result.passed:
        return
    if isinstance(result, LmBuildResult):
        reasons = list(result.record.reasons)
    else:
        reasons = list(result.record.verdict.reasons) + [f"gate missed: {g.describe()}" for g in result.failed_gates]
    for reason in reasons:
        click.echo(f"edgekit: {reason if reason.startswith('gate missed') else 'verdict: ' + reason}", err=True)
    sys.exit(1)


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


def print_lm_build(result: LmBuildResult) -> None:
    """A language model's summary: one line per folder, the gates, the ladder's pick and the notes."""
    r = result.record
    click.echo(f"{r.source.name} ({r.source.parameters / 1e6:.2f}M parameters) for {r.profile}: source perplexity "
               f"{r.reference_perplexity:.3f} on {r.data.validation_windows} windows of {r.data.context} tokens")
    for f in r.files:
        q, b = f.quality, f.bench
        speed = (f", decode {b.decode_tokens_per_s:.1f} tok/s, prefill {b.prefill_tokens_per_s:.0f} tok/s, "
                 f"TTFT {b.ttft_ms:.0f} ms, peak RSS +{b.peak_rss_mb - b.base_rss_mb:.0f} MB at {b.context} tokens"
                 if b is not None else "")
        click.echo(f"  {f.folder}: {f.precision}, {f.bytes / 1e6:.1f} MB, perplexity {q.perplexity:.3f} "
                   f"({q.ppl_increase:+.2%}), top-1 agreement {q.top1_agreement:.3f}, greedy answers identical "
                   f"{f.greedy_identical}/{len(f.greedy)}{speed}")
        click.echo(f"    ladder: {len(f.attempts)} rung(s), shipped '{f.chosen}'")
        for note in f.notes:
            click.echo(f"    {note}")
    for gate in r.gates:
        click.echo(f"  {gate.describe()}")
    for failure in r.failures:
        click.echo(f"  not made: {failure.format} {failure.precision} ({failure.stage}): {failure.reason[:300]}")
    for note in r.notes:
        click.echo(f"  {note.text}")
    if r.recommended:
        click.echo(f"recommended: {r.recommended}: {r.recommended_why}")
    else:
        click.echo(f"recommended: none ({r.recommended_why})")
    click.echo(f"bundle: {result.bundle}")
