"""The two ONNX exporters on the built-in example: why the pruning search screens attempts with the
TorchScript exporter and ships only the winner through torch.export.

    python benchmarks/export.py [--repeats 3]

Per exporter: export seconds (median of --repeats, after one warm-up export), and the exported
graph's params, MACs, bytes and ONNX Runtime p50 (1 thread, batch 1, 300 runs).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from edgekit.measure.bench import bench_file
    from edgekit.examples import digits
    from edgekit.export.onnx import export_onnx
    from edgekit.files.graph_stats import onnx_stats

    model = digits.load_model()
    print(f"{'exporter':<28} {'export s':>9} {'params':>9} {'MACs':>10} {'bytes':>9} {'ORT p50 ms':>11}")
    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        for screening in (True, False):
            path = Path(tmp) / f"{screening}.onnx"
            info = export_onnx(model, path, screening=screening)  # warm-up
            seconds = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                export_onnx(model, path, screening=screening)
                seconds.append(time.perf_counter() - t0)
            stats = onnx_stats(path)
            p50 = bench_file(path, threads=1, warmup=30, runs=300, batch=1).p50_ms
            print(f"{info['exporter']:<28} {float(np.median(seconds)):>9.2f} {stats['params']:>9} {stats['macs']:>10} "
                  f"{stats['bytes']:>9} {p50:>11.3f}")


if __name__ == "__main__":
    main()
