"""Search spaces: the built-in MobileNetV2-style space, and a user's ``FILE.py:FUNC(trial) -> nn.Module``.

Every space is a callable ``(trial) -> (module, resolution)``. ``resolution`` is the square input size
the data adapter resizes image inputs to (None: the data's own size). The built-in space suggests the
same fixed-length parameters in every trial, so a multivariate sampler can model them jointly. Every
parameter with an order (widths, depths, expansion, kernel, resolution) is suggested as a number, not
a category, so that the sampler can carry what it learned about 1.0 to 1.25. A member is rebuilt
from its parameters with ``optuna.trial.FixedTrial``.

The built-in space has two forms, and the grid's nets are members of both. *Per stage* suggests each
stage's depth, width scale, expansion and kernel (19 parameters). *Compound* (as EfficientNet scales depth, width and
resolution together) suggests one depth, expansion and kernel for every stage and keeps the example's
channel progression, scaled by the width multiplier (6 parameters), at resolutions twice as fine (16, 20,
24, 28, 32 for 32 px data). With a short trial budget a sampler can model 6 dimensions from a few
trials, not 19.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from ..core.errors import UsageError, one_line

STAGES = 4
STRIDES = (1, 2, 2, 2)  # after a stride-2 stem, like the shipped example
DEPTHS = ((1, 2), (1, 3), (1, 3), (1, 3))
EXPANSIONS = (2, 6)  # the inverted residual's expansion ratio, an integer in this range
KERNELS = (3, 5)  # depthwise kernel sizes, odd
WIDTH_RANGE = (0.2, 1.25)  # the global width multiplier of the example, sampled on a log scale
SCALES = (0.5, 2.0, 0.25)  # a stage's (or the head's) width relative to the global multiplier: low, high, step
# The shipped example (edgekit/examples/digits.py) in this space's terms: the hand-designed baseline.
EXAMPLE = {"stem": 32, "head": 256, "depth": (1, 2, 2, 2), "channels": (32, 48, 64, 96), "expand": 4, "kernel": 3}
WIDTHS = (0.25, 0.35, 0.5, 0.75, 1.0)
COMPOUND_DEPTH = (1, 3)  # stages 1-3 get this many blocks, stage 0 one fewer (2 is the example's depths)
FORMS = ("per-stage", "compound")


@dataclass(frozen=True)
class Space:
    """A search space: ``make(trial) -> (module, resolution)``; ``name`` is what the user passed."""
    name: str
    make: Callable[[Any], tuple[Any, int | None]]
    builtin: bool
    resolutions: tuple[int, ...] = ()
    form: str = "per-stage"


def divisible(value: float, by: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``by`` (at least ``by``), as MobileNets round widths."""
    return max(by, int(value + by / 2) // by * by)


def resolutions_for(size: int) -> tuple[int, ...]:
    """The resolutions the built-in space offers for data ``size`` pixels high: 1/2, 3/4 and all of it."""
    return tuple(sorted({max(8, divisible(size * f)) for f in (0.5, 0.75)} | {size}))


def example_params(width: float = 1.0, resolution: int = 32, form: str = "per-stage") -> dict[str, Any]:
    """The shipped example's architecture scaled by a width multiplier, at ``resolution``, in the
    space's ``form``: the grid the study is seeded with (``enqueue_trial``)."""
    params: dict[str, Any] = {"resolution": resolution, "width": float(width), "head_scale": 1.0}
    if form == "compound":
        return {**params, "depth": 2, "expand": EXAMPLE["expand"], "kernel": EXAMPLE["kernel"]}
    for i in range(STAGES):
        params[f"s{i}_depth"] = EXAMPLE["depth"][i]
        params[f"s{i}_scale"] = 1.0
        params[f"s{i}_expand"] = EXAMPLE["expand"]
        params[f"s{i}_kernel"] = EXAMPLE["kernel"]
    return params


def design_params(resolutions: tuple[int, ...], form: str = "per-stage") -> list[dict[str, Any]]:
    """A small space-filling start for a short search: the example, then the width x resolution grid's
    four corners and its centre (a 2^2 factorial design with a centre point)."""
    lo, mid, hi = resolutions[0], resolutions[len(resolutions) // 2], resolutions[-1]
    widths = (WIDTHS[0], WIDTHS[len(WIDTHS) // 2], WIDTHS[-1])
    points = [(widths[2], hi), (widths[0], hi), (widths[0], lo), (widths[2], lo), (widths[1], mid)]
    return [example_params(w, r, form) for w, r in dict.fromkeys(points)]


def per_stage(params: dict[str, Any]) -> dict[str, Any]:
    """A compound parameter set written out per stage (a per-stage one as it is)."""
    if "depth" not in params:
        return params
    out = {k: params[k] for k in ("resolution", "width", "head_scale")}
    for i in range(STAGES):
        lo, hi = DEPTHS[i]
        out[f"s{i}_depth"] = min(hi, max(lo, params["depth"] - (1 if i == 0 else 0)))
        out[f"s{i}_scale"] = 1.0
        out[f"s{i}_expand"] = params["expand"]
        out[f"s{i}_kernel"] = params["kernel"]
    return out


def architecture(params: dict[str, Any]) -> dict[str, Any]:
    """What a parameter set means: stem, per-stage output channels (multiples of 8), head; per-stage
    depths, expansions and kernels."""
    params = per_stage(params)
    width = params["width"]
    return {"stem": divisible(EXAMPLE["stem"] * width),
            "channels": [divisible(EXAMPLE["channels"][i] * width * params[f"s{i}_scale"]) for i in range(STAGES)],
            "head": divisible(EXAMPLE["head"] * width * params["head_scale"]),
            "depths": [params[f"s{i}_depth"] for i in range(STAGES)],
            "expand": [params[f"s{i}_expand"] for i in range(STAGES)],
            "kernels": [params[f"s{i}_kernel"] for i in range(STAGES)]}


def builtin_space(in_channels: int, classes: int, size: int, form: str = "per-stage") -> Space:
    resolutions = resolutions_for(size)
    lo, hi, step = SCALES

    def make(trial):
        params = {"resolution": suggest_resolution(trial, resolutions, fine=form == "compound"),
                  "width": trial.suggest_float("width", *WIDTH_RANGE, log=True)}
        if form == "compound":
            params["depth"] = trial.suggest_int("depth", *COMPOUND_DEPTH)
            params["expand"] = trial.suggest_int("expand", *EXPANSIONS)
            params["kernel"] = trial.suggest_int("kernel", *KERNELS, step=2)
        else:
            for i in range(STAGES):
                params[f"s{i}_depth"] = trial.suggest_int(f"s{i}_depth", *DEPTHS[i])
                params[f"s{i}_scale"] = trial.suggest_float(f"s{i}_scale", lo, hi, step=step)
                params[f"s{i}_expand"] = trial.suggest_int(f"s{i}_expand", *EXPANSIONS)
                params[f"s{i}_kernel"] = trial.suggest_int(f"s{i}_kernel", *KERNELS, step=2)
        params["head_scale"] = trial.suggest_float("head_scale", lo, hi, step=step)
        arch = architecture(params)
        trial.set_user_attr("architecture", arch)
        stages = tuple(zip(arch["depths"], arch["channels"], arch["expand"], arch["kernels"]))
        resolution = params["resolution"]
        return mobilenet(in_channels, classes, resolution, arch["stem"], stages, arch["head"]), resolution

    return Space("builtin", make, True, resolutions, form)


def suggest_resolution(trial, resolutions: tuple[int, ...], fine: bool = False) -> int:
    """An integer with a step when the resolutions are evenly spaced (16/24/32), else a category. ``fine``
    halves an even step (16, 20, ..., 32), so the grid's resolutions stay members."""
    steps = {b - a for a, b in zip(resolutions, resolutions[1:])}
    if len(steps) == 1:
        step = steps.pop()
        step = step // 2 if fine and step % 2 == 0 else step
        return trial.suggest_int("resolution", resolutions[0], resolutions[-1], step=step)
    return trial.suggest_categorical("resolution", list(resolutions))


def mobilenet(in_channels: int, classes: int, resolution: int, stem: int, stages: tuple, head: int):
    """A MobileNetV2-style net: stride-2 stem, per stage ``depth`` inverted residuals (``channels``,
    ``expand``, ``kernel``; the first block of a stage takes its stride), a 1x1 head conv, pooling, a
    linear classifier. Input ``image`` (N, C, resolution, resolution), output ``logits``."""
    return _classes()[1](in_channels, classes, resolution, stem, stages, head).eval()


@lru_cache(maxsize=1)
def _classes():
    import torch
    from torch import nn

    def conv_bn(cin, cout, k=1, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + ([nn.ReLU6(inplace=True)] if act else [])

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand, kernel):
            super().__init__()
            hidden = cin * expand
            self.use_res = stride == 1 and cin == cout
            self.block = nn.Sequential(*(conv_bn(cin, hidden) if expand != 1 else []),
                                       *conv_bn(hidden, hidden, kernel, stride, hidden),
                                       *conv_bn(hidden, cout, act=False))

        def forward(self, x):
            y = self.block(x)
            return x + y if self.use_res else y

    class SearchedNet(nn.Module):
        input_names = ["image"]
        output_names = ["logits"]

        def __init__(self, in_channels, classes, resolution, stem, stages, head):
            super().__init__()
            self.shape = (in_channels, resolution, resolution)
            layers, cin = conv_bn(in_channels, stem, 3, 2), stem
            for (depth, channels, expand, kernel), stride in zip(stages, STRIDES):
                for j in range(depth):
                    layers.append(InvertedResidual(cin, channels, stride if j == 0 else 1, expand, kernel))
                    cin = channels
            self.features = nn.Sequential(*layers, *conv_bn(cin, head))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(head, classes)

        def forward(self, image):
            return self.classifier(self.pool(self.features(image)).flatten(1))

        def example_inputs(self):
            return (torch.zeros(1, *self.shape),)

    return InvertedResidual, SearchedNet


def user_space(spec: str) -> Space:
    """``FILE.py:FUNC`` or ``package.module:FUNC``: FUNC(trial) returns an ``nn.Module``; a parameter the
    function suggests as ``resolution`` is the size image inputs are resized to."""
    import importlib

    from ..sources.load import load_user_file

    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(f"--space {spec}: write 'builtin' or FILE.py:FUNC")
    if target.endswith(".py"):
        if not Path(target).is_file():
            raise UsageError(f"--space {spec}: file {target} not found; check the path")
        mod = load_user_file(Path(target), target)
    else:
        try:
            mod = importlib.import_module(target)
        except Exception as exc:
            raise UsageError(f"--space {spec}: module {target} cannot be imported ({one_line(exc)})") from None
    func = getattr(mod, attr, None)
    if func is None or not callable(func):
        raise UsageError(f"--space {spec}: '{attr}' is not a callable in {target}")

    def make(trial):
        import torch

        try:
            module = func(trial)
        except Exception as exc:
            if type(exc).__name__ == "TrialPruned":
                raise
            raise UsageError(f"search space {spec} raised {one_line(exc)}; fix the function") from None
        if not isinstance(module, torch.nn.Module):
            raise UsageError(f"search space {spec} returned {type(module).__name__}, not a torch.nn.Module")
        resolution = trial.params.get("resolution")
        return module.eval(), int(resolution) if resolution is not None else None

    return Space(spec, make, False)


def space_for(spec: str, in_channels: int | None, classes: int | None, size: int | None,
              form: str = "per-stage") -> Space:
    if spec != "builtin":
        return user_space(spec)
    if in_channels is None or size is None:
        raise UsageError("--space builtin searches image classifiers: the data needs one input of shape "
                         "(N, C, H, H) and integer labels 'y'; pass --space FILE.py:FUNC for other models")
    return builtin_space(in_channels, classes, size, form)


def candidate(space, trial_or_params, seed: int):
    """The space's module for a trial (or fixed params), its initial weights drawn from a seeded RNG."""
    import optuna

    from ..runtimes.torch_runner import torch_threads

    trial = (optuna.trial.FixedTrial(trial_or_params) if isinstance(trial_or_params, dict) else trial_or_params)
    with torch_threads(1, seed=seed):
        return space.make(trial)
