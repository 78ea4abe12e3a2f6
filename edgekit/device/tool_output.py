"""Reading the user's own benchmark binaries on devices without Python (``--benchmark-binary``):
TFLite's ``benchmark_model`` and ONNX Runtime's ``onnxruntime_perf_test``. A figure the tool does not print
is None (shown as n/a), never derived from the others."""
from __future__ import annotations

import re

NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


def _find(pattern: str, text: str, scale: float = 1.0):
    hits = re.findall(pattern, text)
    return float(hits[-1]) * scale if hits else None


def parse_benchmark_model(text: str) -> dict:
    """The last ``count=`` line is the timed runs (the first is the warm-up); times there are in us. Older
    builds print no p5/median/p95; none prints p90 or p99."""
    rows = re.findall(r"count=(\d+) first=\S+ curr=\S+ min=\S+ max=\S+ avg=(\S+) std=(\S+)(.*)", text)
    if not rows:
        raise ValueError("no 'count=... avg=... std=...' line of timed runs")
    count, avg, std, rest = rows[-1]
    median = re.search(r"median=" + NUM, rest)
    summary = re.search(r"Inference timings in us: Init: " + NUM + r", First inference: " + NUM, text)
    return {"tool": "benchmark_model", "runs": int(count), "mean_ms": float(avg) / 1000, "std_ms": float(std) / 1000,
            "p50_ms": float(median.group(1)) / 1000 if median else None, "p90_ms": None, "p99_ms": None,
            "init_ms": float(summary.group(1)) / 1000 if summary else None,
            "first_run_ms": float(summary.group(2)) / 1000 if summary else None,
            "peak_rss_mb": _find(r"overall=" + NUM, text)}


def parse_perf_test(text: str) -> dict:
    """``onnxruntime_perf_test -s``: the mean in ms, the percentiles in seconds; no std."""
    mean = _find(r"Average inference time cost: " + NUM + " ms", text)
    if mean is None:
        raise ValueError("no 'Average inference time cost' line")
    runs = _find(r"Runs:\s*" + NUM, text) or _find(r"Total inference requests: " + NUM, text)
    peak = _find(r"Peak working set size: " + NUM + " bytes", text)
    return {"tool": "onnxruntime_perf_test", "runs": int(runs) if runs else None, "mean_ms": mean, "std_ms": None,
            "p50_ms": _find(r"P50 Latency: " + NUM + " s", text, 1000),
            "p90_ms": _find(r"P90 Latency: " + NUM + " s", text, 1000),
            "p99_ms": _find(r"P99 Latency: " + NUM + " s", text, 1000),
            "init_ms": _find(r"Session creation time cost: " + NUM + " s", text, 1000),
            "first_run_ms": _find(r"First inference time cost: " + NUM + " ms", text),
            "peak_rss_mb": peak / 2 ** 20 if peak else None}
