"""report.md of a language-model bundle, rendered from the LmRecord: the verdict, one line per shipped folder,
the gates, the ladder's attempts, the greedy answers beside the source's, speed and memory, and the notes."""
from __future__ import annotations

from pathlib import Path

from ..core.lm_record import LmFile, LmRecord


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def lm_table(r: LmRecord) -> list[str]:
    """One line per shipped folder: what it is, its quality, speed, memory and size."""
    rows = ["| folder | format | precision | size | perplexity | vs source | KL | top-1 agree | greedy same "
            "| decode tok/s | prefill tok/s | TTFT ms | peak RSS growth | gates |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in r.files:
        q, b = f.quality, f.bench
        speed = (f"{b.decode_tokens_per_s:.1f} | {b.prefill_tokens_per_s:.0f} | {b.ttft_ms:.0f} | "
                 f"{b.peak_rss_mb - b.base_rss_mb:.0f} MB" if b is not None else "- | - | - | -")
        missed = [g.name for g in r.gates_of(f.folder) if g.passed is False]
        gates = "FAIL: " + ", ".join(missed) if missed else "pass"
        name = f"**{f.folder}** (ship)" if f.folder == r.recommended else f.folder
        rows.append(f"| {name} | {f.format} | {f.precision} | {_mb(f.bytes)} | {q.perplexity:.3f} | "
                    f"{q.ppl_increase:+.2%} | {q.kl:.4f} | {q.top1_agreement:.3f} | "
                    f"{f.greedy_identical}/{len(f.greedy)} | {speed} | {gates} |")
    return rows


def _attempts(f: LmFile) -> list[str]:
    from ..core.attempt import SCREEN

    rows = ["| rung | verdict | perplexity vs source | size | seconds |", "|---|---|---|---|---|"]
    for a in f.attempts:
        result = a.error[:120] if a.failed else f"{a.drop:+.2%}"
        size = _mb(a.bytes) if a.bytes else "-"
        mark = " (shipped)" if a.chosen else ""
        verdict = "screened out" if a.measured_in == SCREEN else a.verdict  # not exported: no file
        rows.append(f"| {a.label}{mark} | {verdict} | {result} | {size} | {a.seconds or 0:.0f} |")
    return rows


def _answers(f: LmFile) -> list[str]:
    out = []
    for number, g in enumerate(f.greedy, 1):
        same = "identical" if g.identical else f"same for {g.common_tokens} of {g.reference_tokens} tokens"
        out += [f"{number}. **Prompt:** {g.prompt}", f"   - source (torch fp32): {g.reference.strip()!r}",
                f"   - {f.folder}: {g.answer.strip()!r} ({same}{'' if g.stops_alike else '; stops differently'})"]
    return out


def render(r: LmRecord) -> str:
    s = r.source
    verdict = "PASSED: every gate holds" if r.passed else "FAILED: " + "; ".join(r.reasons)
    ship = f"**{r.recommended}**: {r.recommended_why}" if r.recommended else f"none: {r.recommended_why}"
    lines = [f"# {s.name} for {r.profile}: a language model", "", f"**Verdict:** {verdict}", "",
             f"**Ship:** {ship}", "",
             f"- Source: {s.origin} ({s.loader}, {s.architecture}, {s.parameters / 1e6:.2f}M parameters, "
             f"vocabulary {s.vocab_size}, context {s.context_length})",
             f"- Judged on: {r.data.source}: {r.data.validation_windows} held-out windows of {r.data.context} tokens "
             f"({r.data.tokens} tokens of text), {r.data.prompts} prompts answered greedily",
             f"- Source perplexity (torch fp32): {r.reference_perplexity:.3f}",
             f"- Timed with {r.threads} thread(s) on {r.cpu.get('model', 'this CPU')} "
             f"({', '.join(r.cpu.get('flags', [])) or 'flags unknown'})", "", "## Files", ""]
    lines += lm_table(r) + ["", "![perplexity increase against decode tokens/s, area = size](report.png)"]
    lines += ["", "## Gates", ""] + [f"- {g.describe()}" for g in r.gates]
    for f in r.files:
        lines += ["", f"## {f.folder}", "", f"Made by {made_by(f.export)}; weights by precision: "
                  + ", ".join(f"{k} {v}" for k, v in sorted(f.precision_counts.items())), "",
                  "### Quantization ladder", ""] + _attempts(f)
        if f.bench is not None:
            b = f.bench
            lines += ["", "### Speed and memory", "",
                      f"- Prefill {b.prefill_tokens_per_s:.0f} tokens/s and time to first token {b.ttft_ms:.0f} ms "
                      f"for a {b.prompt_tokens}-token prompt; decode {b.decode_tokens_per_s:.1f} tokens/s over "
                      f"{b.new_tokens} tokens (median of {b.runs} runs, {b.threads} thread(s))",
                      f"- Peak RSS {b.peak_rss_mb:.0f} MB while a generation fills {b.context} tokens (runtime alone "
                      f"{b.base_rss_mb:.0f} MB, model loaded {b.loaded_rss_mb:.0f} MB; KV cache at {b.context} "
                      f"tokens {_mb(b.kv_cache_bytes)}); load {b.load_ms:.0f} ms"]
            lines += [f"- {n}" for n in b.notes]
        if f.greedy:
            lines += ["", "### Greedy answers", ""] + _answers(f)
        if f.notes:
            lines += ["", "### Notes", ""] + [f"- {n}" for n in f.notes]
    if r.failures:
        lines += ["", "## Not made", ""] + [f"- {f.describe()}" for f in r.failures]
    if r.notes:
        lines += ["", "## Notes", ""] + [f"- {n.text}" for n in r.notes]
    lines += ["", f"Built in {r.seconds:.0f} s with " + ", ".join(f"{k} {v}" for k, v in sorted(r.versions.items())),
              ""]
    return "\n".join(lines)


def write_lm_report(path: Path, r: LmRecord) -> None:
    Path(path).write_text(render(r), encoding="utf-8")


def made_by(export: dict) -> str:
    """Which tools made the file, and with what, from its export record."""
    fmt = export.get("format")
    options = export.get("options") or {}
    if fmt == "gguf":
        from ..export.gguf import GgufOptions

        return (f"{export.get('converter', '?')}, quantized by {export.get('quantizer', '?')} as "
                f"{GgufOptions.from_dict(options).label}")
    if fmt == "openvino":
        from ..export.openvino_lm import OvLmOptions

        return (f"{export.get('exporter', '?')}, weights compressed by {export.get('compressor', '?')} as "
                f"{OvLmOptions.from_dict(options).label} (OpenVINO {export.get('openvino', '?')})")
    if fmt == "executorch":
        from ..export.executorch_lm import EtLmOptions

        return (f"{export.get('exporter', '?')}, weights quantized by torchao {export.get('torchao', '?')} as "
                f"{EtLmOptions.from_dict(options).label}; static KV cache of {export.get('max_seq_len', '?')} tokens "
                f"(ExecuTorch {export.get('executorch', '?')}, tokenizer {export.get('tokenizer', '?')})")
    return f"{export.get('builder', '?')} with `{' '.join(export.get('builder_args', []))}`"
