"""The compression section of the report and the manifest: before/after on the exported graphs."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.attempt import Attempt
from .attempts import PRUNING, attempts_table

if TYPE_CHECKING:
    from ..prune.compression import Compression

UNSTRUCTURED_NOTE = ("unstructured sparsity leaves every tensor its full size: dense runtimes (ONNX Runtime, "
                     "LiteRT, TFLite-Micro) run the zeros at full cost, so expect no speedup; the gain is the "
                     "compressed (zip) size")


def compression_report(compression: Compression, artifacts: list, folder: Path) -> dict[str, Any]:
    """``compression`` as a dict, with 'after' measured on the bundle's fp32 ONNX file."""
    from ..files.graph_stats import onnx_stats

    out = compression.to_dict()
    fp32 = next((a for a in artifacts if a.format == "onnx" and a.precision == "fp32"), None)
    if fp32 is not None and compression.before:
        after = onnx_stats(folder / fp32.file)
        after["p50_ms"] = fp32.bench.p50_ms if fp32.bench else None
        after["latency_threads"] = fp32.bench.threads if fp32.bench else None
        out["after"] = after
        before = out["before"]
        out["ratios"] = {"params": _ratio(before["params"], after["params"]), "macs": _ratio(before["macs"], after["macs"]),
                         "bytes": _ratio(before["bytes"], after["bytes"]),
                         "zip_bytes": _ratio(before["zip_bytes"], after["zip_bytes"]),
                         "speedup_p50": _ratio(before["latency"]["p50_ms"], after["p50_ms"] or 0)}
    if compression.settings["method"] == "unstructured" and compression.applied:
        out["notes"] = out["notes"] + [UNSTRUCTURED_NOTE]
    return out


def markdown(section: dict[str, Any]) -> list[str]:
    s = section["settings"]
    lines = ["## Compression", ""]
    if not section["applied"]:
        lines.append(f"Asked for {s['method']} up to {s['ceiling']:.0%}; nothing was applied (see notes).")
    else:
        lines.append(f"{s['method']} pruning at ratio **{section['ratio']:.2f}** (ceiling {s['ceiling']:.2f}, "
                     f"importance {s['importance']}, channels rounded to {s['round_to']}); "
                     f"never pruned: {', '.join(s['never_pruned']) or '-'}.")
        if s["lowrank_energy"]:
            lines.append(f"Low-rank factorization at {s['lowrank_energy']:.0%} SVD energy.")
        if s["share_bits"]:
            lines.append(f"Weight sharing: {2 ** s['share_bits']} k-means values per layer.")
    if "after" in section:
        b, a, r = section["before"], section["after"], section["ratios"]
        lines += ["", "Measured on the exported fp32 ONNX graphs (latency: ONNX Runtime, batch 1, "
                  f"{a.get('latency_threads')} thread(s)):", "",
                  "| | params | MACs | bytes | zip bytes | p50 ms |", "|---|---|---|---|---|---|",
                  f"| before | {b['params']} | {b['macs']} | {b['bytes']} | {b['zip_bytes']} | {b['latency']['p50_ms']:.3f} |",
                  f"| after | {a['params']} | {a['macs']} | {a['bytes']} | {a['zip_bytes']} | {a['p50_ms'] or float('nan'):.3f} |",
                  f"| ratio | {r['params']:.2f}x | {r['macs']:.2f}x | {r['bytes']:.2f}x | {r['zip_bytes']:.2f}x | "
                  f"{r['speedup_p50']:.2f}x faster |"]
    details = section.get("details", {})
    rec = details.get("recovery")
    if rec:
        if rec["method"] == "distillation":
            lines += ["", f"Recovery: distillation for {rec['epochs']} epochs on {rec['samples']} training samples "
                      f"(T={rec['temperature']}, alpha={rec['alpha']}, labels used: {rec['labels_used']}), "
                      f"losses {rec['losses']}, {rec['seconds']} s."]
        else:
            lines += ["", f"Recovery: {rec['method']}" + (f" on {rec.get('samples')} calibration samples" if rec.get("samples") else "")
                      + (f" ({rec['why']})" if rec.get("why") else "") + "."]
    if details.get("sharing"):
        shared = [d for d in details["sharing"] if d["shared"]]
        before = details.get("metrics_before_sharing", {})
        lines.append(f"Weight sharing changed {len(shared)} layers; metrics before sharing: "
                     + ", ".join(f"{k} {v:.4f}" for k, v in before.items() if k in ("top1", "r2", "cosine")) + ".")
    if details.get("lowrank"):
        lines += ["", "| layer | shape | rank | params before | params after | replaced |", "|---|---|---|---|---|---|"]
        lines += [f"| {d['layer']} | {d['shape']} | {d['rank']} | {d['params_before']} | {d['params_after']} | "
                  f"{'yes' if d['replaced'] else 'no: ' + d['why']} |" for d in details["lowrank"]]
    lines += ["", f"Search (allowed drop {s['allowed_drop']:.4f} = {s['budget_share']:.0%} of the budget; "
              f"{s.get('search_seconds', 0):.1f} s of a {s['time_box_s']:g} s time box):", ""]
    lines += attempts_table([Attempt.from_dict(t) for t in section["attempts"]], PRUNING)
    lines += [f"- {n}" for n in section["notes"]]
    return lines + [""]


def _ratio(before: float, after: float) -> float:
    return float(before) / float(after) if after else float("nan")
