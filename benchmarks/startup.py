"""Speed goals of the build spine, measured in one run.

    python benchmarks/startup.py [--skip-build]

- `edgekit --help` must answer in <= 1 s (heavy libraries are imported lazily);
  for scale, the same run times `python -c "import tensorflow"` when TF is installed.
- `edgekit build --profile iot` on the built-in example must finish in <= 90 s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EDGEKIT = str(Path(sys.executable).with_name("edgekit"))


def timed(cmd: list[str], repeat: int, cwd: str | None = None) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=cwd)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-build", action="store_true")
    args = parser.parse_args()
    rows = []
    helps = timed([EDGEKIT, "--help"], 7)
    rows.append(("edgekit --help (median of 7)", statistics.median(helps), 1.0))
    bare = timed([sys.executable, "-c", "pass"], 7)
    rows.append(("python -c pass (floor, median of 7)", statistics.median(bare), None))
    try:
        rows.append(("python -c 'import torch' (for scale)", statistics.median(timed([sys.executable, "-c", "import torch"], 3)), None))
    except subprocess.CalledProcessError:
        pass
    if not args.skip_build:
        tmp = tempfile.mkdtemp(prefix="edgekit-startup-")
        try:
            build = timed([EDGEKIT, "build", "--profile", "iot", "--out", tmp], 1)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rows.append((f"edgekit build --profile iot (example, {os.cpu_count()} cores)", build[0], 90.0))
    print(f"{'measurement':<48} {'seconds':>9} {'target':>8} {'verdict':>8}")
    for name, secs, target in rows:
        verdict = "-" if target is None else ("ok" if secs <= target else "MISSED")
        print(f"{name:<48} {secs:>9.3f} {('<= %g' % target) if target else '-':>8} {verdict:>8}")


if __name__ == "__main__":
    main()
