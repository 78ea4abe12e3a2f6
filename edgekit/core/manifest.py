"""The JSON key names of manifest.json and report.json: ``BuildRecord.to_manifest()`` and ``to_report()``.

Nothing else in edgekit writes or reads these keys for a build. The manifest is the contract with apps
(apps/README.md, apps/manifest.schema.json); report.json is everything the report shows.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import Artifact

if TYPE_CHECKING:
    from .lm_record import LmFile, LmRecord
    from .record import BuildRecord, Comparison, FastestPick, FileSpeed, Recommendation, Verdict

MCU_KEYS = ("symbol", "header", "ops_header", "ops", "resolver_methods", "unregistered_ops", "arena_bytes",
            "arena_bytes_with_margin")
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "threads", "runs", "cpu", "init_ms",
                "first_run_ms", "measured_on", "device")
OUTPUT_KEYS = ("task", "drop", "cosine", "snr_db", "mae", "max_abs_diff_source", "top1_agreement", "threshold",
               "threshold_agreement", "above_threshold", "above_threshold_reference")
COMPRESSION_KEYS = ("params", "macs", "bytes", "zip_bytes")


def comparison(c: Comparison) -> dict[str, Any]:
    out: dict[str, Any] = {"twin": c.twin} if c.twin is not None else {}
    out["speedup"] = c.speedup
    out.update({k: v for k, v in (("low", c.low), ("high", c.high)) if v is not None})
    out["verdict"] = c.verdict
    if c.rounds is not None:
        out["rounds"] = c.rounds
    return out


def file_speed(s: FileSpeed) -> dict[str, Any]:
    out: dict[str, Any] = {"p50_by_round": list(s.p50_by_round)}
    if s.vs_fp32_twin is not None:
        out["vs_fp32_twin"] = comparison(s.vs_fp32_twin)
    if s.vs_onnx_fp32 is not None:
        out["vs_onnx_fp32"] = comparison(s.vs_onnx_fp32)
    return out


def recommendations(recs: tuple[Recommendation, ...]) -> dict[str, Any]:
    return {r.runtime: {"file": r.file, "why": r.why, "slower_than_fp32": list(r.slower_than_fp32)} for r in recs}


def fastest(f: FastestPick | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {"file": f.file, "runtime": f.runtime, "format": f.format, "precision": f.precision, "p50_ms": f.p50_ms,
            "measured_by": f.measured_by, "measured_on": f.measured_on, "cpu": f.cpu,
            "tied_with": list(f.tied_with), "why": f.why}


def verdict(v: Verdict) -> dict[str, Any]:
    return {"passed": v.passed, "rule": "every file" if v.strict else "what ships", "reasons": list(v.reasons),
            "shipped_despite": list(v.shipped_despite)}


def _output_figures(a: Artifact) -> dict | None:
    """Per output: its task and the figures it was judged by (every output is gated, the worst decides)."""
    if a.validation is None:
        return None
    return {name: {k: o[k] for k in OUTPUT_KEYS if k in o} for name, o in a.validation.outputs.items()}


def _mcu_entry(a: Artifact) -> dict:
    """What firmware needs of a C array: its headers, symbol, op list and the measured TFLite-Micro arena."""
    if a.format != "c_array":
        return {}
    facts = a.export.mcu.to_dict() if a.export.mcu is not None else {}
    entry = {"embeds": a.export.embeds, **{k: facts[k] for k in MCU_KEYS if k in facts}}
    if a.export.tflm is not None and a.export.tflm.loads:
        entry["arena_bytes_measured"] = a.export.tflm.arena_bytes  # measured again in the measure stage
    return {"mcu": entry}


def _runtime_entry(a: Artifact) -> dict:
    """What an app must set or know to run the file as it was validated: OpenVINO's precision hint and its
    weights file, ExecuTorch's delegation."""
    out: dict[str, Any] = {}
    if a.format == "openvino":
        out["weights_file"] = str(Path(a.file).with_suffix(".bin"))
    if a.export.runtime_options:
        out["runtime_options"] = dict(a.export.runtime_options)
    if a.export.delegation:
        out["delegation"] = dict(a.export.delegation)
    return out


def _latency(a: Artifact) -> dict:
    b = a.bench.to_dict() if a.bench else {}
    entry = {k: b.get(k) for k in LATENCY_KEYS}
    if b.get("by_batch"):  # throughput by request size (bench.batches; the server profile sets it)
        entry["by_batch"] = b["by_batch"]
    return entry


def _file_entry(a: Artifact) -> dict[str, Any]:
    v = a.validation
    return {"file": a.file, "format": a.format, "runtime": a.runtime, "precision": a.precision, "sha256": a.sha256,
            "bytes": a.bytes, "iospec": a.iospec, "precision_map": a.precision_map,
            "metrics": v.metrics if v else None, "metric_drop": a.drop, "outputs": _output_figures(a),
            "drop_decided_by": v.decided_by if v else None, "validated_on": v.measured_on if v else None,
            "latency": _latency(a), **_mcu_entry(a), **_runtime_entry(a)}


def _compression_entry(section) -> dict[str, Any] | None:
    """What an app or a CI check needs: the ratio used, the methods and the graph before/after."""
    if section is None:
        return None
    s = section["settings"]
    return {"applied": section["applied"], "method": s["method"], "ratio": section["ratio"], "ceiling": s["ceiling"],
            "importance": s["importance"], "lowrank_energy": s["lowrank_energy"], "share_bits": s["share_bits"],
            "attempts": len(section["attempts"]),
            "before": {k: section["before"][k] for k in COMPRESSION_KEYS} if section["before"] else None,
            "after": {k: section["after"][k] for k in COMPRESSION_KEYS} if "after" in section else None}


def manifest(r: BuildRecord) -> dict[str, Any]:
    """manifest.json: what an app needs to run the bundle's files with nothing but a runtime."""
    return {
        "schema_version": r.schema_version,
        "model": r.source.name,
        "labels": list(r.source.labels) if r.source.labels is not None else None,
        "preprocessing": r.source.preprocessing,
        "files": [_file_entry(a) for a in r.artifacts],
        "profile": r.profile.to_dict(),
        "gates": [g.to_dict() for g in r.gates],
        "recommended": recommendations(r.recommended),
        "fastest": fastest(r.fastest),
        "failed": [f.to_dict() for f in r.failures],
        "compression": _compression_entry(r.compression),
        "passed": r.passed,
        "pending": list(r.pending),
        "versions": dict(r.versions),
    }


def report(r: BuildRecord) -> dict[str, Any]:
    """report.json: the manifest's facts and everything the report shows."""
    d = r.data
    out: dict[str, Any] = {
        "schema_version": r.schema_version, "edgekit": r.edgekit, "bundle": str(r.bundle),
        "model": {"name": r.source.name, "origin": r.source.origin, "loader": r.source.loader, "kind": r.source.kind,
                  "iospec": r.source.iospec},
        "profile": r.profile.to_dict(), "overrides": dict(r.overrides), "formats_requested": list(r.formats_requested),
        "data": {"source": d.source, "task": d.task, "task_detected": d.task_detected, "calibration": d.calibration,
                 "validation": d.validation, "train": d.train, "train_kind": d.train_kind, "labels": d.labels,
                 "notes": list(d.notes)},
        "reference": {"metrics": r.reference.metrics, "task": r.reference.task},
        "artifacts": [a.to_dict() for a in r.artifacts], "gates": [g.to_dict() for g in r.gates],
        "passed": r.passed, "pending": list(r.pending), "notes": [n.text for n in r.notes],
        "build_seconds": r.build_seconds,
    }
    if r.device is not None:
        out["device"] = asdict(r.device)
    out.update({"failed": [f.to_dict() for f in r.failures],
                "speed": {file: file_speed(s) for file, s in r.speed.items()},
                "recommended": recommendations(r.recommended), "fastest": fastest(r.fastest)})
    if r.compression is not None:
        out["compression"] = dict(r.compression)
    out["verdict"] = verdict(r.verdict)
    return out


LM_SCHEMA_VERSION = 1
LM_KIND = "causal-lm"  # manifest.json's "kind" for a language-model bundle (apps/lm_manifest.schema.json)


def _lm_file_entry(f: LmFile) -> dict[str, Any]:
    """What an app needs to load and trust one model folder."""
    q = f.quality
    out: dict[str, Any] = {
        "folder": f.folder, "format": f.format, "precision": f.precision, "runtime": f.runtime, "bytes": f.bytes,
        "sha256": f.sha256, "precision_counts": dict(f.precision_counts),
        "quality": {"perplexity": q.perplexity, "reference_perplexity": q.reference_perplexity,
                    "ppl_increase": q.ppl_increase, "kl": q.kl, "top1_agreement": q.top1_agreement,
                    "windows": q.windows, "positions": q.positions},
        "greedy": {"prompts": len(f.greedy), "identical": f.greedy_identical,
                   "stops_alike": sum(1 for g in f.greedy if g.stops_alike)},
    }
    if f.bench is not None:
        b = f.bench
        out["speed"] = {"prefill_tokens_per_s": b.prefill_tokens_per_s, "decode_tokens_per_s": b.decode_tokens_per_s,
                        "ttft_ms": b.ttft_ms, "prompt_tokens": b.prompt_tokens, "new_tokens": b.new_tokens,
                        "threads": b.threads, "cpu": b.cpu.get("model", "") if b.cpu else ""}
        out["memory"] = {"peak_rss_mb": b.peak_rss_mb, "base_rss_mb": b.base_rss_mb, "loaded_rss_mb": b.loaded_rss_mb,
                         "rss_growth_mb": b.peak_rss_mb - b.base_rss_mb, "context": b.context,
                         "kv_cache_bytes": b.kv_cache_bytes}
    return out


def lm_manifest(r: LmRecord) -> dict[str, Any]:
    """manifest.json of a language-model bundle (``kind``: causal-lm; apps/lm_manifest.schema.json)."""
    s = r.source
    return {
        "schema_version": LM_SCHEMA_VERSION, "kind": LM_KIND, "model": s.name,
        "tokenizer": {"eos_token_ids": list(s.eos_token_ids), "chat_template": s.chat_template,
                      "vocab_size": s.vocab_size},
        "files": [_lm_file_entry(f) for f in r.files],
        "recommended": r.recommended,
        "profile": r.profile, "gates": [g.to_dict() for g in r.gates],
        "failed": [f.to_dict() for f in r.failures], "passed": r.passed, "versions": dict(r.versions),
    }


def lm_report(r: LmRecord) -> dict[str, Any]:
    """report.json of a language-model bundle: the manifest's facts and everything the report shows."""
    s, d = r.source, r.data
    files = []
    for f in r.files:
        entry = _lm_file_entry(f)
        entry.update(export=f.export, greedy_answers=[asdict(g) for g in f.greedy],
                     bench=f.bench.to_dict() if f.bench is not None else None,
                     attempts=[a.to_dict() for a in f.attempts], chosen=f.chosen, notes=list(f.notes))
        files.append(entry)
    return {
        "schema_version": LM_SCHEMA_VERSION, "kind": LM_KIND,
        "model": {"name": s.name, "origin": s.origin, "loader": s.loader, "architecture": s.architecture,
                  "model_type": s.model_type, "parameters": s.parameters, "vocab_size": s.vocab_size,
                  "context_length": s.context_length, "eos_token_ids": list(s.eos_token_ids),
                  "chat_template": s.chat_template},
        "profile": r.profile, "profile_source": r.profile_source,
        "data": {"source": d.source, "context": d.context, "tokens": d.tokens, "validation_windows": d.validation_windows,
                 "prompts": d.prompts, "seed": d.seed, "notes": list(d.notes)},
        "reference": {"perplexity": r.reference_perplexity, "runtime": "torch fp32"},
        "files": files, "gates": [g.to_dict() for g in r.gates],
        "verdict": {"passed": r.passed, "reasons": list(r.reasons)},
        "recommended": {"folder": r.recommended, "why": r.recommended_why},
        "failed": [f.to_dict() for f in r.failures], "notes": [n.text for n in r.notes], "threads": r.threads,
        "cpu": dict(r.cpu), "versions": dict(r.versions), "build_seconds": r.seconds,
    }
