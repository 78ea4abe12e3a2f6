"""--device against its goals, through a real OpenSSH sshd on 127.0.0.1 (the same machine, so host and
"device" numbers must agree).

    python benchmarks/device.py [--rounds 7] [--runs 1000] [--out device-bench]

- p50: the example's files (`edgekit build --profile rpi4 --prune-method none`, threads 1), host bench and
  ssh bench interleaved round by round; per file the median over rounds of (ssh p50 / host p50).
  Goal: within 10% (0.90-1.10x).
- overhead: the wall time of one ssh round trip (connect, push runner and file, run, pull the result,
  clean up) minus the runner's own time (init, first run, warm-up and timed runs, from its samples).
  Goal: <= 3 s.
- validation: `edgekit validate FILE --device` metrics on the host and through ssh. Goal: equal to the
  last digit (compared as floats, not as printed strings).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from sshd_fixture import start_sshd  # noqa: E402

from edgekit.measure.bench import bench_file, cpu_info  # noqa: E402
from edgekit.device import open_device  # noqa: E402
from edgekit.device.remote import device_bench  # noqa: E402
from edgekit.runtimes import open_runner  # noqa: E402
from edgekit.pipeline.validate_file import validate_on_device  # noqa: E402


def sample(runner) -> dict:
    rng = np.random.default_rng(0)
    return {t.name: rng.random([1 if isinstance(d, str) else d for d in t.shape]).astype(t.dtype)
            for t in runner.file_spec.inputs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = Path(args.out or tempfile.mkdtemp(prefix="device-bench-"))
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}")
    build = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", "--profile", "rpi4",
                            "--threads", "1", "--prune-method", "none", "--out", str(work / "bundle"), "--force"],
                           capture_output=True, text=True)
    if build.returncode != 0:
        sys.exit(f"build failed: {build.stderr[-1000:]}")
    folder = work / "bundle" / "digits_cnn-rpi4"
    files = sorted(p for p in folder.iterdir() if p.suffix in (".onnx", ".tflite"))
    shutil.rmtree(work / "sshd", ignore_errors=True)
    proc, sshd = start_sshd(work / "sshd")
    try:
        print("\n## p50 through ssh vs the host bench (interleaved rounds, 1 thread)\n")
        print("| file | host p50 ms (median) | ssh p50 ms (median) | ratio per round (median) | goal 0.90-1.10 |")
        print("|---|---|---|---|---|")
        for path in files:
            host = open_runner(path)
            one = sample(host)
            hs, ds, ratios = [], [], []
            with open_device(sshd.url()) as dev:
                for _ in range(args.rounds):
                    h = bench_file(path, runs=args.runs, warmup=100, batch=1, inputs=one)
                    d = device_bench(dev, path, host.runtime, one, runs=args.runs, warmup=100)
                    hs.append(h.p50_ms)
                    ds.append(d.p50_ms)
                    ratios.append(d.p50_ms / h.p50_ms)
            ratio = statistics.median(ratios)
            print(f"| {path.name} | {statistics.median(hs):.4f} | {statistics.median(ds):.4f} | {ratio:.3f} "
                  f"({min(ratios):.2f}-{max(ratios):.2f}) | {'PASS' if 0.9 <= ratio <= 1.1 else 'MISS'} |")

        print("\n## one ssh round trip on top of the timed runs (the example's int8 TFLite file, 200 runs)\n")
        print("| trial | wall s | runner's own s | overhead s | goal <= 3 s |")
        print("|---|---|---|---|---|")
        path = folder / "digits_cnn_int8.tflite"
        host = open_runner(path)
        one = sample(host)
        for trial in range(3):
            start = time.perf_counter()
            with open_device(sshd.url()) as dev:
                d = device_bench(dev, path, "litert", one, runs=200, warmup=20)
            wall = time.perf_counter() - start
            own = (d.init_ms + d.first_run_ms + d.mean_ms * (d.runs + d.warmup)) / 1000
            over = wall - own
            print(f"| {trial + 1} | {wall:.3f} | {own:.3f} | {over:.3f} | {'PASS' if over <= 3 else 'MISS'} |")

        print("\n## validation on the device vs the host (`edgekit validate FILE --device`)\n")
        print("| file | metric | host | ssh | equal |")
        print("|---|---|---|---|---|")
        for path in files:
            h, d, side = validate_on_device(path, sshd.url())
            for key in ("top1", "cosine", "snr_db"):
                if key in h.metrics:
                    same = h.metrics[key] == d.metrics[key]
                    print(f"| {path.name} | {key} | {float(h.metrics[key])!r} | {float(d.metrics[key])!r} | "
                          f"{'PASS' if same else 'MISS'} |")
            print(f"| {path.name} | max abs diff of outputs vs host | | "
                  f"{max(side['max_abs_diff_vs_host'].values()):.3g} | "
                  f"{'PASS' if side['within_tolerance_of_host'] else 'MISS'} |")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
