"""Does pruning pay? Structured vs unstructured pruning on dense CPU runtimes, in one run (ratios).

    python benchmarks/pruning.py [--runs 200] [--size 224]

(a) A MobileNetV2-style and a ResNet-style CNN defined here (random weights; BatchNorm statistics
    from random batches). Each is pruned by edgekit's structured pruning (torch-pruning dependency
    graph, L2 importance, channels rounded to 8) at the ratio that halves the MACs of the exported
    graph, and, as a control, by unstructured magnitude pruning at the same sparsity. Every file is
    exported by edgekit and timed in ONNX Runtime fp32 at 1 thread, batch 1, median of --runs runs,
    each in a fresh process.
(b) Prune + 8-bit on the built-in example: `edgekit build --profile iot --bits 8 --formats
    onnx,tflite --threads 1` against the same build without pruning at 32 bits; every file is
    compared with the unpruned fp32 file of its runtime (size, p50 at 1 thread, held-out top-1).
"""
from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def resnet_style(size: int):
    import torch
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                                      nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    class ResNet(nn.Module):
        input_names, output_names = ["image"], ["logits"]

        def __init__(self):
            super().__init__()
            layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
            for cout, stride in [(64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)]:
                layers.append(Basic(cin, cout, stride))
                cin = cout
            self.features = nn.Sequential(*layers)
            self.head = nn.Linear(512, 1000)

        def forward(self, image):
            return self.head(self.features(image).mean((2, 3)))

        def example_inputs(self):
            return (torch.zeros(1, 3, size, size),)

    torch.manual_seed(0)
    return _with_bn_stats(ResNet(), size)


def mobilenet_style(size: int):
    import torch

    from quantization import mobilenet_v2

    model = mobilenet_v2()
    model.example_inputs = lambda: (torch.zeros(1, 3, size, size),)
    return _with_bn_stats(model, size)


def _with_bn_stats(model, size: int):
    import torch

    with torch.no_grad():
        model.train()
        model(torch.randn(16, 3, size, size))
    return model.eval()


def _wrap(module, name: str):
    from edgekit.sources.load import torch_model
    return torch_model(module.eval(), name=name, loader="factory", origin="benchmark")


def halving_ratio(module, args, protect) -> float:
    """The structured ratio whose pruned model has half the MACs (bisection on torch-pruning's count)."""
    import torch_pruning as tp

    from edgekit.prune import structured

    base, _ = tp.utils.count_ops_and_params(module, args)
    lo, hi = 0.0, 0.9
    for _ in range(12):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(module)
        structured.prune_structured(trial, args, mid, importance="l2", round_to=8, protect=protect)
        macs, _ = tp.utils.count_ops_and_params(trial, args)
        lo, hi = (mid, hi) if macs > base / 2 else (lo, mid)
    return hi


def interleaved_p50(files: list[tuple[Path, str, dict]], runs: int, rounds: int) -> list[float]:
    """Median over ``rounds`` of each file's p50, the files timed in turn each round (a fresh process
    per timing), so a busy spell on a shared machine hits every file alike."""
    import statistics

    from edgekit.measure.bench import bench_file

    seen: list[list[float]] = [[] for _ in files]
    for _ in range(rounds):
        for i, (path, runtime, sample) in enumerate(files):
            seen[i].append(bench_file(path, runtime=runtime, threads=1, warmup=20, runs=runs, batch=1,
                                      max_seconds=600, inputs=sample).p50_ms)
    return [statistics.median(s) for s in seen]


def prune_table(tmp: Path, runs: int, size: int, rounds: int) -> None:
    import torch

    from edgekit.export.onnx import export_onnx
    from edgekit.files.graph_stats import onnx_stats
    from edgekit.prune import structured, unstructured
    from edgekit.prune.layers import protected

    sample = {"image": np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)}
    print(f"(a) structured vs unstructured pruning, ONNX Runtime fp32, 1 thread, batch 1, {size} px, "
          f"p50 of {runs} runs, median of {rounds} interleaved rounds")
    print(f"{'model':<16} {'variant':<26} {'params':>10} {'MACs (M)':>9} {'size KB':>8} {'zip KB':>8} "
          f"{'p50 ms':>8} {'speedup':>8}")
    for name, make in (("MobileNetV2", mobilenet_style), ("ResNet-style", resnet_style)):
        module = make(size)
        args = (torch.zeros(1, 3, size, size),)
        _, protect = protected(module, args, ())
        ratio = halving_ratio(module, args, protect)
        pruned = copy.deepcopy(module)
        structured.prune_structured(pruned, args, ratio, importance="l2", round_to=8, protect=protect)
        sparse = copy.deepcopy(module)
        before = sum(p.numel() for p in module.parameters())
        sparsity = 1 - sum(p.numel() for p in pruned.parameters()) / before
        unstructured.prune_unstructured(sparse, sparsity, protect=protect)
        unstructured.make_permanent(sparse)
        variants = (("fp32", module), (f"structured r={ratio:.3f}", pruned), (f"unstructured {sparsity:.0%} zeros", sparse))
        paths = []
        for label, m in variants:
            paths.append(tmp / f"{name}-{label.split()[0]}.onnx")
            export_onnx(_wrap(m, name), paths[-1])
        timings = interleaved_p50([(path, "onnxruntime", sample) for path in paths], runs, rounds)
        base_p50, base_macs = timings[0], onnx_stats(paths[0])["macs"]
        for (label, _), path, p50 in zip(variants, paths, timings):
            stats = onnx_stats(path)
            print(f"{name:<16} {label:<26} {stats['params']:>10} {stats['macs'] / 1e6:>9.1f} "
                  f"{stats['bytes'] / 1024:>8.0f} {stats['zip_bytes'] / 1024:>8.0f} {p50:>8.3f} {base_p50 / p50:>7.2f}x"
                  + (f"   (MACs {stats['macs'] / base_macs:.2f}x of fp32)" if label != "fp32" else ""))


def example_table(tmp: Path, runs: int, rounds: int) -> None:
    import edgekit
    from edgekit.examples import digits

    common = dict(profile="iot", formats=("onnx", "tflite"), threads=1)
    src = edgekit.build(**common, bits=32, prune_method="none", out=tmp / "source")
    both = edgekit.build(**common, bits=8, out=tmp / "pruned")
    comp = both.report["compression"]
    ref_top1 = both.report["reference"]["metrics"]["top1"]
    sample = {"image": digits.load_arrays()["x"][:1]}
    print(f"\n(b) prune + 8-bit on the built-in example (edgekit build --profile iot --bits 8 --formats onnx,tflite "
          f"--threads 1): batch 1, 1 thread, p50 of {runs} runs, median of {rounds} interleaved rounds; 'vs source' compares with the unpruned fp32 file "
          "of the same runtime")
    print(f"pruning ratio chosen by the back-off: {comp['ratio']:.2f} (ceiling {comp['settings']['ceiling']:.2f}, "
          f"{len(comp['attempts'])} attempts); recommended: "
          + ", ".join(f"{rt} {r['file']}" for rt, r in both.report["recommended"].items()))
    print(f"{'file':<30} {'runtime':<12} {'size KB':>8} {'smaller':>8} {'p50 ms':>8} {'faster':>8} {'top-1':>7} "
          f"{'lost (pt)':>9}")
    rows = [(label, result, a) for label, result in (("source", src), ("pruned", both))
            for a in result.artifacts if a.format in ("onnx", "tflite")]
    timings = interleaved_p50([(r.bundle / a.file, a.runtime, _file_sample(a, sample)) for _, r, a in rows], runs, rounds)
    base: dict[str, tuple[int, float]] = {}
    for (label, _, a), p50 in zip(rows, timings):
        base.setdefault(a.runtime, (a.bytes, p50))
        size0, p0 = base[a.runtime]
        top1 = a.validation.metrics["top1"]
        print(f"{label + ' ' + a.file:<30} {a.runtime:<12} {a.bytes / 1024:>8.1f} {size0 / a.bytes:>7.2f}x "
              f"{p50:>8.3f} {p0 / p50:>7.2f}x {top1:>7.4f} {100 * (ref_top1 - top1):>9.2f}")
    print("targets for the prune + 8-bit file: >= 6x smaller, >= 3x faster, <= 1.5 pt lost")


def _file_sample(artifact, sample: dict) -> dict:
    from edgekit.core.iospec import IOSpec
    from edgekit.pipeline.stages import sample_for

    spec = IOSpec.from_dict(artifact.iospec) if artifact.format == "tflite" else None
    return sample_for(spec, sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per file")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        prune_table(Path(tmp), args.runs, args.size, args.rounds)
        example_table(Path(tmp), args.runs, args.rounds)


if __name__ == "__main__":
    main()
