"""report.json, report.md and the terminal table's rows, all rendered from the BuildRecord by attribute."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..core.metrics import PRIMARY
from ..files.bundle import write_json
from .attempts import file_attempts

if TYPE_CHECKING:
    from ..core.artifact import Artifact
    from ..core.record import BuildRecord
    from ..core.results import Gate, ValidationResult

COLUMNS = ("file", "format", "precision", "size", "zip", "metric", "Δ", "p50 ms", "p90 ms", "speedup", "gates")
# size: bytes on the device (for a C array, the embedded model); speedup: p50 of the fp32 ONNX
# reference over this file's p50, both measured at the profile's threads


def table_rows(record: BuildRecord) -> list[tuple[str, ...]]:
    key = PRIMARY[record.data.task]
    base_file = record.fp32_onnx
    base = base_file.bench.p50_ms if base_file is not None and base_file.bench is not None else None
    rows = []
    for a in record.artifacts:
        v, b = a.validation, a.bench
        speed = record.speed.get(a.file)
        versus = speed.vs_onnx_fp32 if speed is not None else None
        if versus is not None:  # interleaved rounds: within the noise, the file is tied with the fp32 ONNX file
            baseline = a.format == "onnx" and a.precision == "fp32"
            speedup = f"{versus.speedup:.2f}x" + (" ≈" if versus.verdict == "tied" and not baseline else "")
        else:
            speedup = f"{base / b.p50_ms:.2f}x" if b is not None and base else "-"
        verdicts = [g for g in record.gates_of(a.file) if g.passed is not None]
        failed = [g.name for g in verdicts if not g.passed]
        gate_text = ("FAIL: " + ", ".join(failed)) if failed else (f"pass ({len(verdicts)})" if verdicts else "-")
        drop = v.drop if v is not None else float("nan")
        rows.append((a.file, a.format, a.precision, _size(a.device_bytes), _size(a.zip_bytes) if a.zip_bytes else "-",
                     _metric(v, key), f"{drop:+.4f}", f"{b.p50_ms:.3f}" if b is not None else _arena(a),
                     f"{b.p90_ms:.3f}" if b is not None else "-", speedup, gate_text))
    return rows


def _arena(a: Artifact) -> str:
    """An untimed TFLite-Micro file: its measured arena where the latency would be."""
    tflm = a.export.tflm
    return f"arena {tflm.arena_bytes / 1024:.1f} KB" if tflm is not None and tflm.arena_bytes else "-"


def _metric(v: ValidationResult | None, key: str) -> str:
    """The figure behind the file's drop: the labelled metric, or the deciding output's own."""
    primary = v.metrics if v is not None else {}
    decided, outputs = (v.decided_by, v.outputs) if v is not None else ("", {})
    o = outputs.get(decided, {})
    if not decided or "(labels)" in str(o.get("task", "")) or "task" not in o:
        return f"{key} {primary.get(key, float('nan')):.4f}"
    kind = str(o["task"]).split(":")[0]
    label, figure = {"distribution": ("argmax", "top1_agreement"), "probability": ("agree@thr", "threshold_agreement")
                     }.get(kind, ("cosine", "cosine"))
    prefix = f"{decided}: " if len(outputs) > 1 else ""
    return f"{prefix}{label} {o.get(figure, float('nan')):.4f}"


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MB"


def title(record: BuildRecord) -> str:
    return f"edgekit build {record.source.name} --profile {record.profile.name}: {'PASS' if record.passed else 'FAIL'}"


def to_markdown(record: BuildRecord) -> str:
    r, d = record, record.data
    lines = [f"# edgekit report: {r.source.name} for profile {r.profile.name}", "",
             f"**Verdict: {'PASS' if r.passed else 'FAIL'}**  ", f"Bundle: `{r.bundle}`", ""]
    lines += verdict_lines(r)
    lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(r)]
    lines += ["", "![accuracy drop vs p90 latency per file; area = file size; recommended files ringed; "
              "dashed lines: the profile's budgets](report.png)"]
    lines += ["", "## Reference", f"Source model `{r.source.origin}` ({r.source.loader}) on "
              f"{d.validation} validation samples, task **{d.task}** (detected: {d.task_detected}): "
              + ", ".join(f"{k} {v:.4f}" for k, v in r.reference.metrics.items() if k in ("top1", "r2", "mae", "cosine")),
              ""]
    if r.overrides:
        lines += ["## Overrides", ""] + [f"- `{k}` = {v!r} (from the command line)" for k, v in r.overrides.items()]
        lines.append("")
    if r.recommended:
        lines += ["## Recommended files", ""]
        for rec in r.recommended:
            flagged = f"; slower than the fp32 twin, not recommended: {', '.join(rec.slower_than_fp32)}" \
                if rec.slower_than_fp32 else ""
            lines.append(f"- {rec.runtime}: `{rec.file}` ({rec.why}{flagged})")
        lines.append("")
    if r.fastest is not None:
        f = r.fastest
        lines += [f"Fastest for the target: `{f.file}` ({f.runtime}, {f.p50_ms:.3f} ms p50, {f.measured_by}; "
                  f"{f.why}; measured on {f.measured_on}, CPU {f.cpu or 'unknown'})", ""]
    if r.compression:
        from .compression import markdown
        lines += markdown(dict(r.compression))
    lines += ["## Gates", ""] + [f"- {_gate_line(g)}" for g in r.gates]
    lines += ["", "## Files", ""]
    for a in r.artifacts:
        lines += _file_lines(a)
    if r.failures:
        lines += ["## Files not made (the other formats ship)", ""] + [
            f"- {f.format} {f.precision}: {f.stage}: {f.reason}" for f in r.failures] + [""]
    if r.pending:
        lines += ["## Not applied yet", ""] + [f"- {p}" for p in r.pending] + [""]
    if r.notes:
        lines += ["## Notes", ""] + [f"- {n.text}" for n in r.notes] + [""]
    return "\n".join(lines)


def verdict_lines(record: BuildRecord) -> list[str]:
    """Why the verdict is what it is, under which rule."""
    v = record.verdict
    rule = ("every file must meet every gate (strict)" if v.strict else
            "every requested format ships a file that meets every gate")
    lines = [f"Rule: {rule}."]
    lines += [f"- {reason}" for reason in v.reasons]
    if v.shipped_despite:
        lines.append(f"- missed a gate, kept in the bundle and never recommended: {', '.join(v.shipped_despite)}")
    return lines + [""]


def _file_lines(a: Artifact) -> list[str]:
    b, v, export = a.bench, a.validation, a.export.to_dict()
    lines = [f"### {a.file}", f"- format {a.format}, precision {a.precision}, runtime {a.runtime}, "
             f"{a.bytes} bytes, sha256 `{a.sha256[:16]}…`, exported by {a.export.exporter}"]
    for kind in ("inputs", "outputs"):
        for t in a.iospec.get(kind, []):
            how = ""
            if t.get("source_perm"):
                how = f", fed from source '{t.get('source_name') or t['name']}' transposed by {tuple(t['source_perm'])}"
            elif t.get("source_name"):
                how = f", carries source '{t['source_name']}'"
            lines.append(f"- {kind[:-1]} `{t['name']}`: {t['shape']} {t['dtype']} {t['layout'] or ''}{how}")
    if v is not None:
        lines.append("- metrics: " + ", ".join(f"{k} {val:.4g}" for k, val in v.metrics.items()))
        for name, o in v.outputs.items():
            lines.append(f"- output `{name}`{' (decides the drop)' if name == v.decided_by else ''}: "
                         f"shape {o.get('shape')}, judged as {o.get('task', '-')}: {_fidelity(o)}; "
                         f"within tolerance: {o.get('within_tolerance', 'n/a')}")
    else:
        lines.append("- metrics: ")
    if b is not None:
        lines.append(f"- latency at {b.threads} thread(s), {b.runs} runs after {b.warmup} warm-up: "
                     f"p50 {b.p50_ms:.3f} ms, p90 {b.p90_ms:.3f} ms, p99 {b.p99_ms:.3f} ms, "
                     f"mean {b.mean_ms:.3f} ± {b.std_ms:.3f} ms")
        tp = f", {b.throughput_batch:.0f}/s at batch {b.batch}" if b.throughput_batch else ""
        lines.append(f"- throughput {b.throughput_b1:.0f}/s at batch 1{tp}; peak RSS {b.peak_rss_mb:.1f} MB "
                     f"(+{b.rss_growth_mb:.1f} MB for the model at batch 1)")
        for row in b.by_batch:
            lines.append(f"- batch {row['batch']} ({row['mode']}): p50 {row['p50_ms']:.3f} ms, p90 "
                         f"{row['p90_ms']:.3f} ms, {row['samples_per_s']:.0f} samples/s")
        lines.append(f"- CPU: {b.cpu.get('model')} ({', '.join(b.cpu.get('flags', []))})")
        lines += [f"- note: {n}" for n in b.notes]
    tflm = a.export.tflm
    if tflm is not None:
        if tflm.loads:
            kb = (tflm.arena_bytes or 0) / 1024
            lines.append(f"- TFLite-Micro: every op supported; arena measured at {tflm.arena_bytes} bytes "
                         f"({kb:.1f} KB). {tflm.note}")
        else:
            lines.append(f"- TFLite-Micro: cannot run it: {tflm.error}")
    if export.get("symbol"):
        lines.append(f"- C array `{export['symbol']}` ({export['flash_bytes']} bytes, 16-byte aligned) "
                     f"in `{a.file}` / `{export['header']}`, embedding `{export['embeds']}`")
    lines += file_attempts(a.export.attempts, a.export.chosen)  # the search's attempts (report/attempts.py)
    counts: dict[str, int] = {}
    for p in a.precision_map.values():
        counts[p] = counts.get(p, 0) + 1
    lines.append("- precision map: " + ", ".join(f"{n} layers at {p}" for p, n in counts.items()))
    lines.append("")
    return lines


def _fidelity(o: dict) -> str:
    keys = [("drop", "drop", "+.4f"), ("top1_agreement", "argmax agreement", ".4f"),
            ("threshold_agreement", "agreement at threshold", ".4f"), ("cosine", "cosine", ".4f"),
            ("snr_db", "SNR dB", ".1f"), ("mae", "MAE", ".3g"), ("max_abs_diff", "max |diff|", ".3g")]
    parts = [f"{label} {o[k]:{fmt}}" for k, label, fmt in keys if isinstance(o.get(k), (int, float))]
    if "above_threshold" in o:
        parts.append(f"{o['above_threshold']} values above {o['threshold']:g} (source {o['above_threshold_reference']})")
    return ", ".join(parts) or "-"


def _gate_line(g: Gate) -> str:
    if g.name == "formats":
        mark = "pass" if g.passed else "**MISSED**"
        return f"formats ({g.file}): {mark}, {g.value:g} of {g.limit:g} files made" + (f" — {g.note}" if g.note else "")
    if g.name == "tflm_ops":
        return f"tflm_ops ({g.file}): " + ("pass, every op is supported" if g.passed else f"**MISSED**: {g.note}")
    if g.passed is None:
        return f"{g.name} ({g.file}): not applied — {g.note}"
    mark = "pass" if g.passed else "**MISSED**"
    where = f", measured on {g.measured_on}" if g.measured_on else ""
    return f"{g.name} ({g.file}): {mark}, {g.value:.6g} {g.unit} (limit {g.limit:.6g} {g.unit}{where})"


def write_reports(folder: Path, record: BuildRecord) -> None:
    """report.json, report.png, pruning.png (when pruning changed the model) and report.md."""
    from .plot import write_plot
    from .pruning import write_pruning_plot

    write_json(folder / "report.json", record.to_report())
    write_plot(folder / "report.png", record)
    described = write_pruning_plot(folder / "pruning.png", record.compression)
    text = to_markdown(record)
    if described:
        text += f"\n## What pruning kept\n\n![{described}](pruning.png)\n\n{described}.\n"
    (folder / "report.md").write_text(text)
