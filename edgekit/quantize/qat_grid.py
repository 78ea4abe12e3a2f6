"""Quantization-aware training of weights on the grid the target quantizer will round them to.

A fine-tuned weight only keeps its accuracy in the file if the exporter rounds it to the very integers the
training saw. So the fake-quantization follows each target quantizer's own rule (per output channel,
symmetric, zero point 0, round half to even):

| target                         | bits | integers   | scale                    |
|--------------------------------|------|------------|--------------------------|
| ONNX Runtime ``quantize_static`` (QDQ) | 4 | -8 .. 7  | max abs / 7.5 (its symmetric range is [-8, 7]) |
| ai-edge-quantizer weight-only  | 4    | -8 .. 7    | max abs / 7 (so -7 .. 7 are reached)        |
| ONNX Runtime / TFLite converter | 8   | -127 .. 127 | max abs / 127                             |

The op is torch's own ``torch.fake_quantize_per_channel_affine`` (a straight-through estimator inside the
range, zero gradient where it clamps), the op torch.ao's and PT2E's FakeQuantize modules call; the scale is
recomputed from the weight at every step, as the quantizer will compute it from the final weight. torchao's
``IntxFakeQuantizer`` fixes int4 at max abs / 7.5 and int8 at max abs / 127.5, which matches only the first
row (see benchmarks/qat_libraries.py, which measures how many integers each one transfers).

BatchNorm is folded into the convolution before training (``torch.fx.experimental.optimization.fuse``), as
the exporters fold it: the quantized weight is the folded one. The weights stay float after training (the
latent weights, not their fake-quantized values: re-quantizing the latter with a max-abs rule would move the
grid), and the target's own quantizer writes the file.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass


@dataclass(frozen=True)
class WeightGrid:
    """One target quantizer's per-channel symmetric weight rule."""
    target: str  # the quantizer it reproduces
    bits: int
    qmin: int
    qmax: int
    divisor: float  # scale = max |w| over the channel / divisor
    depthwise: bool  # whether grouped convolutions are quantized at these bits


GRIDS = {
    ("onnx", 4): WeightGrid("onnxruntime quantize_static QInt4 per-channel symmetric", 4, -8, 7, 7.5, True),
    ("onnx", 8): WeightGrid("onnxruntime quantize_static QInt8 per-channel symmetric", 8, -127, 127, 127.0, True),
    ("tflite", 4): WeightGrid("ai-edge-quantizer weight-only int4 per-channel symmetric", 4, -7, 7, 7.0, False),
    ("tflite", 8): WeightGrid("tf.lite.TFLiteConverter int8 per-channel symmetric", 8, -127, 127, 127.0, True),
}
MIN_SCALE = 1e-12  # an all-zero channel: any scale rounds it to 0


def grid(target: str, bits: int) -> WeightGrid:
    try:
        return GRIDS[(target, bits)]
    except KeyError:
        raise ValueError(f"no QAT weight grid for {target} at {bits} bits; known: "
                         f"{', '.join(f'{t} {b}' for t, b in GRIDS)}") from None


def channel_scale(weight, g: WeightGrid):
    """The per-output-channel scale ``g``'s quantizer computes for ``weight`` (float32, detached)."""
    import torch

    absmax = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1).to(torch.float32)
    return torch.clamp(absmax / g.divisor, min=MIN_SCALE)


def integers(weight, g: WeightGrid):
    """The integers ``g``'s quantizer writes for ``weight`` (for tests and reports)."""
    import torch

    scale = channel_scale(weight, g).reshape(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(torch.round(weight.detach().to(torch.float32) / scale), g.qmin, g.qmax).to(torch.int32)


def fake_quant(g: WeightGrid):
    """A parametrization module: the weight as ``g``'s quantizer will round it (straight-through gradient)."""
    import torch
    from torch import nn

    class FakeQuantWeight(nn.Module):
        def forward(self, weight):
            scale = channel_scale(weight, g)
            zero = torch.zeros(weight.shape[0], dtype=torch.int32)
            return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, g.qmin, g.qmax)

    return FakeQuantWeight()


def fold_batchnorm(module):
    """A copy of ``module`` with every conv -> BatchNorm pair folded (None when torch.fx cannot trace it)."""
    from torch import nn

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        return copy.deepcopy(module)
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(copy.deepcopy(module).eval(), inplace=True)
    except Exception:
        return None


def quantizable(module, g: WeightGrid) -> list[str]:
    """The names of the layers ``g``'s quantizer quantizes: convolutions (grouped ones where it does) and
    linear layers."""
    from torch import nn

    names = []
    for name, m in module.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if m.groups == 1 or g.depthwise:
                names.append(name)
        elif isinstance(m, nn.Linear):
            names.append(name)
    return names


def prepare(module, g: WeightGrid, skip: tuple[str, ...] = ()) -> tuple[object, list[str]]:
    """A BatchNorm-folded copy of ``module`` whose quantizable weights are fake-quantized to ``g``; returns
    it and the layers it covers. Raises ValueError when BatchNorm cannot be folded."""
    import torch.nn.utils.parametrize as parametrize

    folded = fold_batchnorm(module)
    if folded is None:
        raise ValueError("torch.fx cannot trace the model, so its BatchNorm layers cannot be folded into the "
                         "convolutions the way the exporter folds them")
    layers = [n for n in quantizable(folded, g) if n not in skip]
    named = dict(folded.named_modules())
    for name in layers:
        parametrize.register_parametrization(named[name], "weight", fake_quant(g))
    return folded, layers


def observe_inputs(module, layers: list[str], batches) -> dict[str, tuple[float, float]]:
    """The (min, max) of every listed layer's input over ``batches`` (tuples of input tensors): what a
    min-max calibration sees."""
    import torch

    named, seen, hooks = dict(module.named_modules()), {}, []

    def hook(name):
        def record(_, args):
            x = args[0].detach()
            low, high = float(x.min()), float(x.max())
            old = seen.get(name, (low, high))
            seen[name] = (min(old[0], low), max(old[1], high))
        return record

    hooks = [named[n].register_forward_pre_hook(hook(n)) for n in layers]
    try:
        with torch.no_grad():
            for args in batches:
                module(*args)
    finally:
        for h in hooks:
            h.remove()
    return seen


def fake_quant_inputs(module, ranges: dict[str, tuple[float, float]]) -> int:
    """Fake-quantize each layer's input to 8 bits the way ONNX Runtime's min-max calibration does (per
    tensor, asymmetric: the range widened to include 0, scale (max - min) / 255, zero point round(-min /
    scale)); the ranges stay fixed while training. Returns the hooks added (``finish`` removes them)."""
    import torch

    named, handles = dict(module.named_modules()), []
    for name, (low, high) in ranges.items():
        low, high = min(low, 0.0), max(high, 0.0)
        scale = max((high - low) / 255.0, MIN_SCALE)
        zero = int(round(-low / scale))

        def pre(_, args, scale=scale, zero=zero):
            return (torch.fake_quantize_per_tensor_affine(args[0], scale, zero, 0, 255), *args[1:])

        handles.append(named[name].register_forward_pre_hook(pre))
    module.edgekit_qat_hooks = handles  # on the trained copy itself: nothing kept outside it
    return len(ranges)


def finish(module) -> object:
    """The trained module with its fake-quantization removed, keeping the latent float weights."""
    import torch.nn.utils.parametrize as parametrize

    for handle in getattr(module, "edgekit_qat_hooks", ()):
        handle.remove()
    if hasattr(module, "edgekit_qat_hooks"):
        del module.edgekit_qat_hooks
    for m in module.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
    return module.eval()
