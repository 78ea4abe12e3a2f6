"""Could a different NNCF or OpenVINO setting make the CNN's int8 IR faster than NNCF's defaults? One interleaved run.

    python benchmarks/runtimes.py --models cnn --out DIR     # first: the CNN's bundle and its peers' files
    python benchmarks/openvino_settings.py DIR/cnn [--rounds 5] [--runs 200]

On the fp32 IR and calibration split that ``benchmarks/runtimes.py`` kept, NNCF is run (telemetry off, as
edgekit's worker runs it) with its defaults, with ``target_device=CPU_SPR``, and with the performance preset and
fast bias correction; the defaults' IR is also compiled with a bf16 inference-precision hint (its float layers in
bf16). Each file is timed against ORT fp32 on the bundle's ONNX file in one ``edgekit.measure.compare.interleaved`` run at
1 thread, with its cosine to ORT fp32 on 32 calibration images.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def variants(folder: Path, out: Path) -> dict[str, Path]:
    from edgekit.export.openvino import NO_TELEMETRY, ov_call

    os.environ.update(NO_TELEMETRY)  # before nncf is imported
    import nncf
    import openvino as ov

    from edgekit.runtimes.openvino import HINT_KEY

    peers = folder / "peers"
    model = ov.Core().read_model(str(peers / "ov_fp32.xml"))
    with np.load(peers / "calibration.npz") as npz:
        name = npz.files[0]
        images = npz[name]
    data = nncf.Dataset([images[i:i + 1] for i in range(len(images))])
    settings = {"NNCF defaults": {},
                "target_device=CPU_SPR": {"target_device": nncf.TargetDevice.CPU_SPR},
                "performance preset, fast bias correction": {"preset": nncf.QuantizationPreset.PERFORMANCE,
                                                             "fast_bias_correction": True}}
    made = {}
    for i, (label, kwargs) in enumerate(settings.items()):
        quantized = nncf.quantize(model, data, subset_size=len(images), **kwargs)
        quantized.set_rt_info("f32", HINT_KEY)
        made[label] = out / f"v{i}.xml"
        ov.save_model(quantized, str(made[label]), compress_to_fp16=False)
    made["NNCF defaults, bf16 hint"] = out / "v_bf16.xml"
    ov_call("recompress", "bf16 hint", src=str(made["NNCF defaults"].resolve()),
            out=str(made["NNCF defaults, bf16 hint"].resolve()), hint="bf16", fp16=False)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path, help="the cnn folder of a benchmarks/runtimes.py --out run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    import tempfile

    from edgekit.measure.bench import cpu_info
    from edgekit.measure.compare import interleaved
    from edgekit.runtimes import open_runner

    onnx = next(args.folder.glob("out/*/model.onnx"), None)
    if onnx is None or not (args.folder / "peers" / "ov_fp32.xml").is_file():
        sys.exit(f"{args.folder}: no out/*/model.onnx and peers/ov_fp32.xml: run benchmarks/runtimes.py --out first")
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}; flags: {', '.join(cpu['flags'])}")
    with tempfile.TemporaryDirectory(prefix="edgekit-ovset-") as tmp:
        made = variants(args.folder, Path(tmp))
        with np.load(args.folder / "peers" / "calibration.npz") as npz:
            images = npz[npz.files[0]][:32]
        ref = open_runner(onnx, "onnxruntime", threads=1)
        key = ref.iospec.input_names[0]
        want = np.concatenate([ref.run({key: images[i:i + 1]})[ref.iospec.output_names[0]] for i in range(32)])
        files = [(onnx, "onnxruntime", {key: images[:1]})]
        cosines = {}
        for label, path in made.items():
            runner = open_runner(path, "openvino", threads=1)
            name = runner.iospec.input_names[0]
            got = np.concatenate([next(iter(runner.run({name: images[i:i + 1]}).values())) for i in range(32)])
            a, b = got.reshape(32, -1).astype(np.float64), want.reshape(32, -1).astype(np.float64)
            cosines[label] = float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
            files.append((path, "openvino", {name: images[:1]}))
        p50s = interleaved(files, threads=1, rounds=args.rounds, runs=args.runs, round_seconds=2.0)
    base = np.median(p50s[0])
    print(f"\n{'file':<46} {'p50 ms':>8} {'vs ORT fp32':>12} {'rounds':>12} {'cosine':>8}")
    print(f"{'ORT fp32 (' + onnx.name + ')':<46} {base:8.3f} {1.0:11.2f}x {'':>12} {1.0:8.5f}")
    for (label, _), rounds in zip(made.items(), p50s[1:]):
        ratios = [b / r for b, r in zip(p50s[0], rounds)]
        print(f"{label:<46} {np.median(rounds):8.3f} {base / np.median(rounds):11.2f}x "
              f"{min(ratios):5.2f}-{max(ratios):4.2f} x {cosines[label]:8.5f}")


if __name__ == "__main__":
    main()
