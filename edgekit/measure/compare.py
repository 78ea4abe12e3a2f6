"""Speed verdicts that survive the machine's noise: files timed in interleaved rounds in one process, and a
ratio called faster or slower only when every round agrees beyond a margin; otherwise the files are tied."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..core.errors import StageError

MARGIN = 0.05  # every round must be more than 5% apart for a verdict


def interleaved(files: list[tuple[Path, str, dict]], *, threads: int, rounds: int = 5, runs: int = 40,
                round_seconds: float = 0.5, warmup: int = 5) -> list[list[float]]:
    """p50 (ms) of each (path, runtime, batch-1 sample keyed by the file's inputs) in each round."""
    with tempfile.TemporaryDirectory(prefix="edgekit-compare-") as tmp:
        entries = []
        for i, (path, runtime, sample) in enumerate(files):
            npz = str(Path(tmp) / f"s{i}.npz")
            np.savez(npz, **sample)
            entries.append({"path": str(Path(path).resolve()), "runtime": runtime, "sample": npz})
        args = {"compare": entries, "threads": threads, "rounds": rounds, "runs": runs,
                "round_seconds": round_seconds, "warmup": warmup}
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
        proc = subprocess.run([sys.executable, "-m", "edgekit.measure.bench_worker", json.dumps(args)],
                              capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise StageError("compare speed", tail[0][:300])
    return json.loads(lines[-1])["p50_by_round"]


def verdict(base: list[float], other: list[float], margin: float = MARGIN) -> dict:
    """``other`` against ``base`` (p50s per round): its median speedup, the range over rounds, and 'faster',
    'slower' or 'tied'."""
    speedups = [b / o for b, o in zip(base, other) if o > 0]
    low, high = min(speedups), max(speedups)
    word = "faster" if low > 1 + margin else "slower" if high < 1 - margin else "tied"
    return {"speedup": float(np.median(speedups)), "low": low, "high": high, "verdict": word,
            "rounds": len(speedups)}
