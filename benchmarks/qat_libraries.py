"""Which QAT fake-quantization transfers into the files edgekit ships, in one run.

    python benchmarks/qat_libraries.py [--epochs 3]

The same small digits CNN (tests/data/small_cnn.py, trained here, BatchNorm folded) is fine-tuned for the
same epochs with each library's weight fake-quantizer, then exported exactly as `edgekit build` exports:
ONNX Runtime ``quantize_static`` (int4 and int8 QDQ, int8 QOperator, per channel), ai-edge-quantizer's weight-only int4 and
the TFLite converter's full-integer int8 (from onnx2tf's SavedModel). Per row:

- ``match %``: the share of weights whose integer in the file is the integer the fake-quantizer trained on;
- ``torch drop``: top-1 drop of the weight-fake-quantized model in torch (what the training optimised;
  activations stay float here, so full-integer files add their activation rounding);
- ``file drop``: top-1 drop of the exported file in its own runtime (what ships), on the same held-out digits.

Fake-quantizers: edgekit's grid (``torch.fake_quantize_per_channel_affine`` with each target's scale rule);
torchao's ``IntxFakeQuantizer`` (per-channel symmetric, the weight viewed as [out, -1]: its per-axis mode
groups along the last dimension); the ``FusedMovingAvgObsFakeQuantize`` that PT2E's ``prepare_qat_pt2e``
inserts for a per-channel symmetric weight spec, with torch's default ranges (int8 [-128, 127], int4 [-8, 7])
and its moving-average observer.
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

# (file, grid, bits, ONNX Runtime arrangement)
TARGETS = (("ORT int4 QDQ", "onnx", 4, "qdq-u8s8"), ("ai-edge-quantizer int4", "tflite", 4, None),
           ("ORT int8 QDQ", "onnx", 8, "qdq-u8s8"), ("ORT int8 QOperator", "onnx", 8, "qoperator-u8s8"),
           ("TFLite converter int8", "tflite", 8, None))


def _small_cnn(folder: Path):
    spec = importlib.util.spec_from_file_location("small_cnn", Path(__file__).parents[1] / "tests/data/small_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder.mkdir(parents=True)
    module.write_user_folder(folder)
    from edgekit.sources.load import load_model
    return load_model(f"{folder / 'model.py'}:make_model", weights=folder / "model.pt"), np.load(folder / "digits.npz")


class _Param:
    """A weight parametrization around a library's fake-quantizer; ``integers`` gives the ones it trains on."""

    def __init__(self, kind: str, bits: int, g):
        import torch
        self.kind, self.bits, self.g = kind, bits, g
        if kind == "torchao":
            from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer
            dtype = torch.int4 if bits == 4 else torch.int8
            self.fq = IntxFakeQuantizer(IntxFakeQuantizeConfig(dtype, granularity="per_channel", is_symmetric=True))
        elif kind == "pt2e":
            from torchao.quantization.pt2e import FusedMovingAvgObsFakeQuantize, MovingAveragePerChannelMinMaxObserver
            low, high = (-8, 7) if bits == 4 else (-128, 127)
            self.fq = FusedMovingAvgObsFakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, quant_min=low,
                                                    quant_max=high, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                    ch_axis=0)

    def module(self):
        from torch import nn

        from edgekit.quantize import qat_grid as qat
        if self.kind == "edgekit":
            return qat.fake_quant(self.g)
        outer = self

        class FQ(nn.Module):
            def forward(self, w):
                if outer.kind == "torchao":
                    return outer.fq(w.reshape(w.shape[0], -1)).reshape(w.shape)
                return outer.fq(w)
        m = FQ()
        m.add_module("fq", self.fq) if self.kind == "pt2e" else None
        return m

    def integers(self, weight):
        import torch

        from edgekit.quantize import qat_grid as qat
        with torch.no_grad():
            if self.kind == "edgekit":
                return qat.integers(weight, self.g).numpy()
            if self.kind == "torchao":
                scale = self.fq.scale.reshape(-1, *([1] * (weight.dim() - 1)))
                low, high = (-8, 7) if self.bits == 4 else (-128, 127)
            else:
                scale = self.fq.scale.reshape(-1, *([1] * (weight.dim() - 1)))
                low, high = int(self.fq.quant_min), int(self.fq.quant_max)
            return torch.clamp(torch.round(weight / scale), low, high).to(torch.int32).numpy()


def finetune(source, kind: str, target: str, bits: int, data, epochs: int):
    """(the fine-tuned float module, the integers each layer trained on, the fake-quant model's top-1)."""
    import torch
    import torch.nn.utils.parametrize as parametrize

    from edgekit.quantize import qat_grid as qat
    from edgekit.runtimes.torch_runner import torch_threads

    g = qat.grid(target, bits)
    model = qat.fold_batchnorm(source.module)
    layers = qat.quantizable(model, g)
    named = dict(model.named_modules())
    params = {}
    for name in layers:
        params[name] = _Param(kind, bits, g)
        parametrize.register_parametrization(named[name], "weight", params[name].module())
    x, y = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    with torch_threads(1, seed=0):
        opt = torch.optim.Adam(model.parameters(), 5e-4)
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x))
            for i in range(0, len(x), 64):
                idx = order[i:i + 64]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        for p in params.values():  # freeze observers: the ranges the file will be compared with
            if p.kind == "pt2e":
                p.fq.disable_observer()
        with torch.no_grad():
            top1 = float((model(torch.from_numpy(data["x"])).argmax(1).numpy() == data["y"]).mean())
            wanted = {}
            for name in layers:
                latent = named[name].parametrizations.weight.original.detach()
                wanted[name] = params[name].integers(latent)
    for name in layers:
        parametrize.remove_parametrizations(named[name], "weight", leave_parametrized=False)
    return model.eval(), wanted, top1


def export(model, source, target: str, bits: int, arrangement: str | None, folder: Path, tf, calib):
    """The file edgekit's pass makes for (target, bits), its integers by layer order, and its runner."""
    from edgekit.export.job import ExportJob
    from edgekit.export.onnx import export_onnx
    from edgekit.export.tflite import export_tflite_onnx2tf, map_to_source
    from edgekit.files.onnx_io import initializer_integers
    from edgekit.quantize.onnx_ort import QuantPlan, preprocess, quantize_onnx
    from edgekit.quantize.passes import calibration_npz
    from edgekit.quantize.tflite_int4_recipe import write_int4
    from edgekit.runtimes import open_runner
    from edgekit.files.tflite_info import integer_weights

    folder.mkdir(parents=True)
    m = replace(source, module=model, onnx_path=None, meta={})
    export_onnx(m, folder / "f.onnx")
    if target == "onnx":
        quantize_onnx(preprocess(folder / "f.onnx", folder / "pre.onnx"), folder / "q.onnx", calib,
                      QuantPlan(bits, arrangement))
        got = {k.removesuffix(".weight_quantized"): v.astype(np.int32) for k, v in
               initializer_integers(folder / "q.onnx").items() if k.endswith(".weight_quantized")}
        return got, open_runner(folder / "q.onnx", "onnxruntime")
    fp32 = export_tflite_onnx2tf(ExportJob(m, folder, folder, io.StringIO(), tf, reference_onnx=folder / "f.onnx",
                                           calibration=calib))[0]
    if bits == 4:
        write_int4(tf, fp32.path, folder / "q.tflite")
    else:
        tf.call("convert", "int8", saved_model=str(fp32.saved_model), precision="int8", out=str(folder / "q.tflite"),
                calibration=str(calibration_npz(calib, fp32.mapping, folder / "c.npz")), int8_io=False)
    got = {f"#{i}": (q.transpose(0, 3, 1, 2) if q.ndim == 4 else q) for i, q in
           enumerate(integer_weights(folder / "q.tflite").values())}
    mapping = map_to_source(folder / "q.tflite", source.iospec, like=fp32.mapping)
    return got, open_runner(folder / "q.tflite", "litert", mapping=mapping)


def matched(want: dict, got: dict) -> tuple[int, int]:
    """(weights whose file integer equals the trained one, all weights): by name (ONNX) or, for TFLite,
    against the file tensor of the same shape that agrees best."""
    same = total = 0
    for name, ints in want.items():
        total += ints.size
        if name in got:
            candidates = [got[name].reshape(ints.shape)]
        else:
            candidates = [q.reshape(ints.shape) for q in got.values() if q.size == ints.size]
        same += max((int((q == ints).sum()) for q in candidates), default=0)
    return same, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    import torch

    from edgekit.measure.bench import cpu_info
    from edgekit.core.data import Split
    from edgekit.export.tf_client import TfWorker
    import torchao

    with tempfile.TemporaryDirectory(prefix="edgekit-qatlib-") as tmp:
        tmp = Path(tmp)
        source, data = _small_cnn(tmp / "user")
        with torch.no_grad():
            fp32_top1 = float((source.module(torch.from_numpy(data["x"])).argmax(1).numpy() == data["y"]).mean())
        calib = Split({"x": data["x_train"][:128]})  # training digits: every held-out one is scored
        print(f"small digits CNN, {len(data['x_train'])} training and {len(data['x'])} held-out digits, "
              f"{args.epochs} epochs each, fp32 top-1 {fp32_top1:.4f}; torch {torch.__version__}, torchao "
              f"{torchao.__version__}; CPU: {cpu_info()}")
        print(f"{'file':<30} {'fake-quantizer':<44} {'match %':>8} {'torch drop pt':>13} {'file drop pt':>12}")
        with TfWorker(io.StringIO()) as tf:
            for label, target, bits, arrangement in TARGETS:
                for kind, what in (("edgekit", "edgekit grid (the target's scale rule)"),
                                   ("torchao", "torchao IntxFakeQuantizer"),
                                   ("pt2e", "PT2E FusedMovingAvgObsFakeQuantize")):
                    model, want, torch_top1 = finetune(source, kind, target, bits, data, args.epochs)
                    got, runner = export(model, source, target, bits, arrangement, tmp / f"{label}-{kind}".replace(" ", "-"),
                                       tf, calib)
                    same, total = matched(want, got)
                    out = runner.run({"x": data["x"]})
                    file_top1 = float((np.asarray(next(iter(out.values()))).argmax(1) == data["y"]).mean())
                    print(f"{label:<30} {what:<44} {100 * same / total:>8.1f} {100 * (fp32_top1 - torch_top1):>13.2f} "
                          f"{100 * (fp32_top1 - file_top1):>12.2f}")


if __name__ == "__main__":
    main()
