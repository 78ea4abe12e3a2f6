"""LiteRT next to ONNX Runtime for the same model, in one run (ratios, not absolute times).

    python benchmarks/runtimes.py [--runs 300]

Exports the built-in example to fp32 ONNX (the reference) and to fp32/fp16 TFLite with edgekit's
own exporters, then times each file in its own runtime in a fresh process (batch 1, median of
--runs after warm-up) at 1 and 2 threads. The ratio column is ORT fp32 p50 / file p50.
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    from edgekit.bench import bench_file
    from edgekit.data import prepare
    from edgekit.examples import digits
    from edgekit.export import ExportJob, PassContext
    from edgekit.export.onnx import export_onnx
    from edgekit.export.tf_client import TfWorker
    from edgekit.export.tflite import export_tflite_onnx2tf
    from edgekit.profiles import load_profile
    from edgekit.quantize.passes import tflite_converted
    from edgekit.stages import sample_for

    model = digits.load_model()
    data = prepare(digits.load_arrays(), model.iospec, source="digits")
    one = {k: v[:1] for k, v in data.validation.inputs.items()}
    with tempfile.TemporaryDirectory() as tmp, TfWorker() as tf:
        ref = Path(tmp) / "digits_cnn.onnx"
        export_onnx(model, ref)
        (fp32,) = export_tflite_onnx2tf(ExportJob(model, Path(tmp), Path(tmp), io.StringIO(), tf, reference_onnx=ref,
                                                  calibration=data.calibration))
        ctx = PassContext(Path(tmp), Path(tmp), model.name, model.iospec, io.StringIO(), tf, data, None,
                          load_profile("mobile"))
        tfl = [fp32, tflite_converted("fp16")(fp32, ctx)]
        files = [("onnxruntime", "fp32", ref, one)] + [("litert", e.precision, e.path, sample_for(e.mapping, one))
                                                         for e in tfl]
        print(f"model: built-in digits_cnn (1x1x32x32), batch 1, {args.runs} timed runs after 30 warm-up")
        print(f"{'runtime':<12} {'precision':<9} {'threads':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
              f"{'size KB':>8} {'vs ORT fp32':>11}")
        for threads in (1, 2):
            base = None
            for runtime, precision, path, sample in files:
                r = bench_file(path, runtime=runtime, threads=threads, warmup=30, runs=args.runs, batch=16,
                               max_seconds=30, inputs=sample)
                base = base or r.p50_ms
                print(f"{runtime:<12} {precision:<9} {threads:>7} {r.p50_ms:>8.3f} {r.p90_ms:>8.3f} {r.p99_ms:>8.3f} "
                      f"{r.file_bytes / 1024:>8.1f} {base / r.p50_ms:>10.2f}x" + ("  (noisy)" if r.notes else ""))


if __name__ == "__main__":
    main()
