"""Quantization against the usual hand-made baselines, in one run (ratios, not absolute times).

    python benchmarks/quantization.py [--runs 200] [--rounds 3] [--skip-accuracy] [--skip-latency] [--skip-qat]

(a) Accuracy on the built-in example (held-out digits, the exported file run in its runtime): the
    baselines quantize the unpruned source; edgekit's rows come with and without its pruning stage.
(b) Latency and size on a MobileNetV2-style CNN at 224 px defined here (random weights), batch 1,
    p50 of --runs after warm-up, at 1 and 2 threads, every file timed in a fresh process, the median
    of --rounds interleaved rounds.

Rows: ORT fp32; ORT quantize_static with defaults; onnx2tf -oiqt (its full-integer file, calibrated
on the same samples since its default calibration downloads images); edgekit mobile (8-bit: the
recommended files) and edgekit iot (4-bit ONNX).
(c) Quantization-aware training against its goals: a small digits CNN (tests/data/small_cnn.py, a user's
    folder with a train split) at 4 bits, a 0.5-point budget and no pruning, built with QAT off (PTQ and the
    repair ladder alone) and on (the default); the built-in example at iot with QAT on its miss (the default)
    and with qat.mode = "always", and the iot build's wall time. Each drop is measured in the file's runtime
    on held-out samples.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np


def mobilenet_v2():
    from torch import nn

    def cbr(cin, cout, k=3, s=1, g=1, act=True):
        return [nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout)] + (
            [nn.ReLU6(inplace=True)] if act else [])

    class Block(nn.Module):
        def __init__(self, cin, cout, s, t):
            super().__init__()
            h = cin * t
            layers = (cbr(cin, h, 1) if t != 1 else []) + cbr(h, h, 3, s, h) + cbr(h, cout, 1, act=False)
            self.body, self.res = nn.Sequential(*layers), s == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.res else self.body(x)

    class MobileNetV2(nn.Module):
        input_names, output_names = ["image"], ["logits"]

        def __init__(self):
            super().__init__()
            cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
            layers, cin = cbr(3, 32, 3, 2), 32
            for t, c, n, s in cfg:
                for i in range(n):
                    layers.append(Block(cin, c, s if i == 0 else 1, t))
                    cin = c
            self.features = nn.Sequential(*layers, *cbr(cin, 1280, 1))
            self.head = nn.Linear(1280, 1000)

        def forward(self, image):
            return self.head(self.features(image).mean((2, 3)))

        def example_inputs(self):
            import torch
            return (torch.zeros(1, 3, 224, 224),)

    import torch
    torch.manual_seed(0)
    model = MobileNetV2().eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics so activations have realistic ranges
        model.train()
        model(torch.randn(16, 3, 224, 224))
        model.eval()
    return model


def ort_default_int8(src: Path, out: Path, calibration: dict[str, np.ndarray]) -> None:
    from onnxruntime.quantization import quantize_static

    from edgekit.core.data import Split
    from edgekit.quantize.calibration import SplitReader
    quantize_static(str(src), str(out), SplitReader(Split(calibration), list(calibration)))


def onnx2tf_oiqt(src: Path, tmp: Path, calibration: np.ndarray, name: str) -> Path:
    import onnx2tf

    npy = tmp / "calib.npy"
    np.save(npy, np.transpose(calibration, (0, 2, 3, 1)).astype(np.float32))
    folder = tmp / "o2t"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        onnx2tf.convert(input_onnx_file_path=str(src), output_folder_path=str(folder), not_use_onnxsim=True,
                        output_integer_quantized_tflite=True, non_verbose=True,
                        custom_input_op_name_np_data_path=[[name, str(npy), 0.0, 1.0]])
    return folder / f"{src.stem}_full_integer_quant.tflite"


def accuracy_table(tmp: Path) -> None:
    import edgekit
    from edgekit.examples import digits
    from edgekit.export.onnx import export_onnx
    from edgekit.export.tflite import map_to_source
    from edgekit.runtimes import open_runner
    from edgekit.pipeline.stages import load_data
    from edgekit.measure.validate import reference_outputs, validate_file

    model = digits.load_model()
    data = load_data(model, digits.load_arrays(), "digits", None, None, None)
    ref = reference_outputs(model, data)
    builds = {(profile, prune): edgekit.build(profile=profile, out=tmp / f"a-{profile}-{prune}", threads=1,
                                               formats=("onnx", "tflite"), prune_method=None if prune else "none")
              for profile in ("mobile", "iot") for prune in (False, True)}
    src = tmp / "digits_cnn.onnx"  # the unpruned source, as a user would export it by hand
    export_onnx(model, src)
    ort_default_int8(src, tmp / "ort_default.onnx", data.calibration.inputs)
    o2t = onnx2tf_oiqt(src, tmp, data.calibration.inputs["image"], "image")

    def check(path: Path, runtime: str):
        mapping = map_to_source(path, model.iospec) if runtime == "litert" else None
        runner = open_runner(path, runtime, mapping=mapping)
        return validate_file(path, ref, data, None, runtime=runtime, runner=runner, raise_on_failure=False)

    rows = [("ORT fp32", src, "onnxruntime"), ("ORT quantize_static defaults", tmp / "ort_default.onnx", "onnxruntime"),
            ("onnx2tf -oiqt (full integer)", o2t, "litert")]
    for (profile, prune), result in builds.items():
        what = f"edgekit {profile}{', pruned' if prune else ''}"
        bits = "int8" if profile == "mobile" else "int4"
        for suffix, runtime in ((f"_{bits}.onnx", "onnxruntime"), (f"_{bits}.tflite", "litert")):
            rows.append((f"{what} {bits}{suffix.rsplit('.', 1)[1].replace('onnx', ' ONNX').replace('tflite', ' TFLite')}",
                         result.bundle / f"digits_cnn{suffix}", runtime))
        if profile == "mobile" and prune:
            for rt, rec in result.report["recommended"].items():
                rows.append((f"{what}, recommended for {rt}", result.bundle / rec["file"], rt))
    print(f"(a) accuracy on the built-in example: top-1 of the source model {ref.metrics['top1']:.4f} "
          f"on {len(data.validation)} held-out digits; agreement and SNR against the source model's logits")
    print(f"{'file':<52} {'top-1 drop pt':>13} {'agree %':>8} {'SNR dB':>7} {'size KB':>8} {'smaller':>8}")
    for label, path, rt in rows:
        v = check(path, rt)
        out = v.outputs[ref.primary_output]
        print(f"{label:<52} {100 * v.drop:>13.2f} {100 * out['top1_agreement']:>8.2f} {out['snr_db']:>7.1f} "
              f"{path.stat().st_size / 1024:>8.1f} {src.stat().st_size / path.stat().st_size:>7.2f}x")


def latency_table(tmp: Path, runs: int, rounds: int) -> None:
    import edgekit
    from edgekit.measure.bench import bench_file
    from edgekit.sources.load import torch_model
    from edgekit.pipeline.stages import sample_for

    module = mobilenet_v2()
    model = torch_model(module, name="mobilenetv2", loader="factory", origin="benchmarks/quantization.py")
    rng = np.random.default_rng(0)
    np.savez(tmp / "mbv2.npz", image=rng.standard_normal((96, 3, 224, 224)).astype(np.float32))
    common = dict(data=tmp / "mbv2.npz", out=tmp / "b", calib_samples=64, val_samples=32, threads=1)
    mobile = edgekit.build(model, profile="mobile", formats=("onnx", "tflite"), **common)
    iot = edgekit.build(model, profile="iot", formats=("onnx",), **{**common, "out": tmp / "c"})
    src = mobile.bundle / "mobilenetv2.onnx"
    calib = {"image": rng.standard_normal((64, 3, 224, 224)).astype(np.float32)}
    ort_default_int8(src, tmp / "mbv2_ort_default.onnx", calib)
    o2t = onnx2tf_oiqt(src, tmp, calib["image"], "image")
    one = {"image": calib["image"][:1]}
    by = {a.file: a for a in mobile.artifacts}
    tfl = by["mobilenetv2.tflite"]
    rows = [("ORT fp32", src, "onnxruntime", one),
            ("ORT quantize_static defaults", tmp / "mbv2_ort_default.onnx", "onnxruntime", one),
            ("onnx2tf -oiqt (full integer)", o2t, "litert", {_own_input(o2t): one["image"].transpose(0, 2, 3, 1)}),
            ("LiteRT fp32 (edgekit)", mobile.bundle / tfl.file, "litert", sample_for(_spec(tfl), one))]
    for name in ("mobilenetv2_int8.onnx", "mobilenetv2_int8.tflite"):
        a = by[name]
        rows.append((f"edgekit mobile {name.split('_')[1]}", mobile.bundle / name, a.runtime,
                     sample_for(_spec(a), one) if a.runtime == "litert" else one))
    rows.append(("edgekit iot int4 ONNX", iot.bundle / "mobilenetv2_int4.onnx", "onnxruntime", one))
    print(f"\n(b) MobileNetV2-style CNN, 224 px, random weights: batch 1, p50 of {runs} runs, "
          f"median of {rounds} interleaved rounds")
    print(f"{'file':<32} {'size KB':>9} {'smaller':>8} {'p50 1t ms':>10} {'x ORT fp32':>10} {'p50 2t ms':>10} {'x ORT fp32':>10}")
    base_size = src.stat().st_size
    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):  # interleaved rounds: a busy spell on this shared machine hits every row alike
        for threads in (1, 2):
            for label, path, rt, sample in rows:
                r = bench_file(path, runtime=rt, threads=threads, warmup=20, runs=runs, batch=1, max_seconds=120,
                               inputs=sample)
                times.setdefault((label, threads), []).append(r.p50_ms)
    results = {key: float(np.median(v)) for key, v in times.items()}
    for label, path, _rt, _ in rows:
        b1, b2 = results[("ORT fp32", 1)], results[("ORT fp32", 2)]
        p1, p2 = results[(label, 1)], results[(label, 2)]
        print(f"{label:<32} {path.stat().st_size / 1024:>9.0f} {base_size / path.stat().st_size:>7.2f}x "
              f"{p1:>10.2f} {b1 / p1:>9.2f}x {p2:>10.2f} {b2 / p2:>9.2f}x")
    print("recommended:", {rt: r["file"] for rt, r in mobile.report["recommended"].items()})
    q = by["mobilenetv2_int8.onnx"]
    snr = {a.label: round(float(a.snr_db), 1) for a in q.export.attempts if a.snr_db is not None}
    print(f"edgekit int8.onnx arrangement: {q.export.chosen}; output SNR of each attempt against fp32 (dB): {snr}")


def _own_input(path: Path) -> str:
    from edgekit.runtimes.litert import LiteRTRunner
    return LiteRTRunner(path).file_spec.inputs[0].name


def _spec(artifact):
    from edgekit.core.iospec import IOSpec
    return IOSpec.from_dict(artifact.iospec)


def qat_table(tmp: Path) -> None:
    import importlib.util
    import json
    import time

    import edgekit
    from edgekit.measure.bench import cpu_info
    from edgekit.targets.profiles import load_profile, with_overrides

    spec = importlib.util.spec_from_file_location("small_cnn", Path(__file__).parents[1] / "tests/data/small_cnn.py")
    small = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(small)
    user = tmp / "small-cnn"
    user.mkdir()
    small.write_user_folder(user)
    (user / "tight.toml").write_text('name = "iot-tight"\nextends = "iot"\n[prune]\nmethod = "none"\n'
                                     '[budget]\nmax_accuracy_drop = 0.005\n[qat]\nepochs = 15\n')
    rows, seconds = [], {}
    runs = [("small CNN, 4-bit, 0.5-pt budget", dict(model=f"{user / 'model.py'}:make_model", weights=user / "model.pt",
                                                    data=user / "digits.npz", profile=user / "tight.toml"), 0.005),
            ("example at iot", dict(profile="iot"), None)]
    for what, kwargs, budget in runs:
        for mode in ("off", "on-miss", "always"):
            if budget is not None and mode == "always":
                continue
            started = time.perf_counter()
            profile = with_overrides(load_profile(kwargs["profile"]), {"qat.mode": mode})
            result = edgekit.build(**{**kwargs, "profile": profile}, out=tmp / f"q-{len(seconds)}",
                                   formats=("onnx", "tflite"))
            seconds[(what, mode)] = time.perf_counter() - started
            report = json.loads((result.bundle / "report.json").read_text())
            limit = budget if budget is not None else report["profile"]["budget"]["max_accuracy_drop"]
            for a in report["artifacts"]:
                if a["precision"] != "int4":
                    continue
                q = a["export"].get("qat") or {}
                levels = list(a["precision_map"].values())
                rows.append((what, mode, a["file"], a["validation"]["drop"], limit, levels.count("int4"), len(levels),
                             q.get("drop_before"), q.get("drop_after"), q.get("shipped")))
    print(f"\n(c) quantization-aware training; CPU: {cpu_info()}")
    print(f"{'build':<34} {'qat.mode':<8} {'file':<24} {'drop pt':>8} {'budget':>7} {'int4 layers':>11} "
          f"{'PTQ pt':>7} {'QAT pt':>7} {'QAT ships':>9}")

    def pt(v):
        return "-" if v is None else f"{100 * v:.2f}"
    for what, mode, name, drop, limit, n4, n, before, after, shipped in rows:
        print(f"{what:<34} {mode:<8} {name:<24} {pt(drop):>8} {pt(limit):>7} {f'{n4}/{n}':>11} {pt(before):>7} "
              f"{pt(after):>7} {'-' if shipped is None else str(shipped):>9}")
    print("wall seconds per build: " + ", ".join(f"{w} qat {m}: {s:.1f}" for (w, m), s in seconds.items()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-qat", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-qbench-") as tmp:
        if not args.skip_accuracy:
            accuracy_table(Path(tmp))
        if not args.skip_qat:
            qat_table(Path(tmp))
        if not args.skip_latency:
            latency_table(Path(tmp), args.runs, args.rounds)


if __name__ == "__main__":
    main()
