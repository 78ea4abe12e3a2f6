"""The latency/memory harness. Every file is timed in a fresh process so its peak RSS is its own.

``bench_file`` spawns ``python -m edgekit.measure.bench_worker``, which opens the file with the same
runner validation uses, warms up, times N runs at batch 1, measures throughput at a larger
batch, and reports p50/p90/p99, mean, std, peak RSS and its growth over the bare process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import StageError, UsageError
from ..core.results import BenchResult

NOISY_CV = 0.25  # std/mean above this, or p99 > 2x p50, means the machine was busy


def cpu_info() -> dict:
    """CPU model and the SIMD flags that matter for inference kernels (the same reader runs on a device)."""
    from ..runtimes.device_runner import cpu_info as read

    return read()


def run_worker(module: str, args: dict, threads: int, path: Path, refusal: str) -> dict:
    """Run a measuring worker (``python -m module '<json>'``) in a fresh process at ``threads``; its last line of
    output is the JSON result. Its exit code 2 is the user's input (its last error line), anything else a
    failed bench stage naming ``path``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(args)], capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 2:
        raise UsageError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"{path}: {refusal}")
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise StageError("bench", f"{path.name}: {tail[0][:300]}")
    return json.loads(lines[-1])


def bench_file(path: str | Path, *, runtime: str | None = None, threads: int = 1, warmup: int = 20,
               runs: int = 200, batch: int = 32, max_seconds: float = 10.0,
               inputs: dict[str, np.ndarray] | None = None, min_seconds: float = 0.0, repeat: int = 1,
               batches: tuple[int, ...] = ()) -> BenchResult:
    """Time ``path`` in its runtime in a fresh process. ``inputs`` is one batch-1 sample. ``repeat`` rounds of
    at least ``runs`` runs and ``min_seconds`` each (the time box stretches to 1.5x ``min_seconds``).
    ``batches``: also the latency and samples/s of one request of each of these sizes (``by_batch``)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"file {path} not found; check the path")
    if any(int(b) < 1 for b in batches):
        raise UsageError(f"bench batch sizes must be >= 1, got {', '.join(str(b) for b in batches)}")
    for name, value, low in (("threads", threads, 1), ("warmup", warmup, 0), ("runs", runs, 1), ("batch", batch, 1),
                             ("repeat", repeat, 1)):
        if value < low:
            raise UsageError(f"bench {name} must be >= {low}, got {value}")
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        sample = None
        if inputs is not None:
            sample = str(Path(tmp) / "sample.npz")
            np.savez(sample, **inputs)
        args = {"path": str(path.resolve()), "runtime": runtime, "threads": threads, "warmup": warmup,
                "runs": runs, "batch": batch, "max_seconds": max(max_seconds, 1.5 * min_seconds), "sample": sample,
                "min_seconds": min_seconds, "repeat": repeat, "batches": [int(b) for b in batches]}
        raw = run_worker("edgekit.measure.bench_worker", args, threads, path, "cannot be benchmarked")
    raw["cpu"] = cpu_info()
    rounds = raw.pop("round_p50_ms")
    extra = [f"p50 of each of the {repeat} rounds: " + ", ".join(f"{p:.4g}" for p in rounds) + " ms"] if repeat > 1 else []
    raw["by_batch"] = tuple(raw.get("by_batch") or ())
    raw["notes"] = tuple(raw.pop("runner_notes", ())) + tuple(noise_notes(raw, requested_runs=runs * repeat)) + tuple(extra)
    return BenchResult(**raw)


def summarize(times_ms: list[float]) -> dict:
    t = np.asarray(times_ms)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "mean_ms": float(t.mean()), "std_ms": float(t.std())}


def noise_notes(r: dict, requested_runs: int | None = None) -> list[str]:
    notes = []
    cv = r["std_ms"] / r["mean_ms"] if r["mean_ms"] else 0.0
    if cv > NOISY_CV or r["p99_ms"] > 2 * r["p50_ms"]:
        notes.append(f"noisy machine: std is {cv:.0%} of the mean and p99 is {r['p99_ms'] / r['p50_ms']:.1f}x p50; "
                     "rerun on an idle machine for firm numbers")
    if requested_runs is not None and r["runs"] < requested_runs:
        notes.append(f"only {r['runs']} of {requested_runs} timed runs fit in the time box; p99 is rough")
    elif r["runs"] < 100:
        notes.append(f"{r['runs']} timed runs: p99 is rough")
    return notes
