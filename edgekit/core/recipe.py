"""Labels and the preprocessing recipe a user declares for a model (``--labels``, ``--preprocessing``).

The manifest carries both for apps (apps/README.md, schema 4). The recipe is data: an input, an optional
raw form, steps (scale, bilinear resize, normalize) and the layout after them. Checked here, field by field,
so a bad file fails the build up front with the key it got wrong, never a manifest the apps refuse.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .errors import UsageError
from .iospec import IOSpec

STEPS = {"scale": {"factor": "number"},
         "resize": {"height": "size", "width": "size", "method": "bilinear", "align_corners": "false",
                    "antialias": "bool"},
         "normalize": {"mean": "numbers", "std": "positive numbers"}}
RAW = {"height": "size", "width": "size", "channels": "channels", "range": "range", "ink": "ink", "fit": "fit"}
KEYS = {"input", "description", "raw", "steps", "layout"}


def load_labels(path: str | Path) -> list[str]:
    """A JSON list of strings, or a text file with one label per line."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--labels {path}: file not found")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            labels = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"--labels {path}: not valid JSON ({exc}); give a list of strings") from None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels) or not labels:
            raise UsageError(f"--labels {path}: expected a JSON list of strings")
        return labels
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UsageError(f"--labels {path}: no labels in it; give one label per line")
    return labels


def check_labels(labels: list[str], iospec: IOSpec, where: str) -> None:
    if not labels:
        raise UsageError(f"{where}: no labels given; give one per class")
    classes = iospec.outputs[0].shape[-1] if iospec.outputs and iospec.outputs[0].shape else None
    if isinstance(classes, int) and classes != len(labels):
        raise UsageError(f"{where}: {len(labels)} labels, but the model's first output "
                         f"'{iospec.outputs[0].name}' has {classes} classes")


def load_recipe(path: str | Path, iospec: IOSpec) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--preprocessing {path}: file not found")
    try:
        recipe = json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"--preprocessing {path}: not valid JSON ({exc})") from None
    return check_recipe(recipe, iospec, f"--preprocessing {path}")


def check_recipe(recipe: Any, iospec: IOSpec, where: str) -> dict[str, Any]:
    """The recipe with defaults filled in (the only input; that input's layout), or a UsageError naming the key."""
    if not isinstance(recipe, dict):
        raise UsageError(f"{where}: expected a JSON object with 'steps'")
    unknown = sorted(set(recipe) - KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(KEYS))})")
    names = iospec.input_names
    name = recipe.get("input", names[0] if len(names) == 1 else None)
    if name not in names:
        raise UsageError(f"{where}: 'input' must name one of the model's inputs ({', '.join(names)}), got {name!r}")
    spec = iospec.input(name)
    layout = recipe.get("layout", spec.layout or "NCHW")
    if layout not in ("NCHW", "NHWC"):
        raise UsageError(f"{where}: 'layout' must be NCHW or NHWC, got {layout!r}")
    steps = recipe.get("steps")
    if not isinstance(steps, list):
        raise UsageError(f"{where}: 'steps' must be a list of {{\"op\": ...}} objects ({', '.join(STEPS)})")
    for i, step in enumerate(steps):
        op = step.get("op") if isinstance(step, dict) else None
        if op not in STEPS:
            raise UsageError(f"{where}: steps[{i}].op must be one of {', '.join(STEPS)}, got {op!r}")
        _fields(step, STEPS[op], f"{where}: steps[{i}] ({op})", required=True, extra={"op"})
    out = {"input": name, "steps": steps, "layout": layout}
    if "description" in recipe:
        if not isinstance(recipe["description"], str):
            raise UsageError(f"{where}: 'description' must be a string")
        out["description"] = recipe["description"]
    if "raw" in recipe:
        raw = recipe["raw"]
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: 'raw' must be an object with height, width, channels, range")
        _fields(raw, RAW, f"{where}: raw", required=True, optional={"ink", "fit"})
        if "fit" in raw and "ink" not in raw:
            raise UsageError(f"{where}: raw 'fit' needs 'ink' (which values are the strokes)")
        out["raw"] = raw
    _check_shape(recipe, spec, layout, where)
    return out


def _check_shape(recipe: dict, spec, layout: str, where: str) -> None:
    """What the steps make must fit the input: channels (normalize's lists too), and height/width after resize."""
    dims = spec.shape[1:]
    if len(dims) != 3:
        if "raw" in recipe or any(step["op"] == "resize" for step in recipe["steps"]):
            raise UsageError(f"{where}: input '{spec.name}' has shape {list(spec.shape)}; a raw image form and "
                             "resize steps need an image input (batch, C, H, W) or (batch, H, W, C)")
        return
    channels, height, width = dims if layout == "NCHW" else (dims[2], dims[0], dims[1])
    raw = recipe.get("raw", {})
    if raw and isinstance(channels, int) and raw["channels"] != channels:
        raise UsageError(f"{where}: raw has {raw['channels']} channel(s), input '{spec.name}' {channels}")
    size = (raw.get("height"), raw.get("width"))
    for i, step in enumerate(recipe["steps"]):
        if step["op"] == "resize":
            size = (step["height"], step["width"])
        if step["op"] == "normalize" and isinstance(channels, int):
            for key in ("mean", "std"):
                if len(step[key]) not in (1, channels):
                    raise UsageError(f"{where}: steps[{i}] (normalize): '{key}' has {len(step[key])} values for "
                                     f"{channels} channel(s); give 1 or {channels}")
    for got, want, axis in zip(size, (height, width), ("height", "width")):
        if got is not None and isinstance(want, int) and got != want:
            raise UsageError(f"{where}: the steps end at {axis} {got}, input '{spec.name}' takes {want}")


def _fields(obj: dict, kinds: dict[str, str], where: str, *, required: bool, extra=frozenset(),
            optional=frozenset()) -> None:
    for key in obj:
        if key not in kinds and key not in extra:
            raise UsageError(f"{where}: unknown key '{key}' (known: {', '.join(kinds)})")
    for key, kind in kinds.items():
        if key not in obj:
            if required and key not in optional:
                raise UsageError(f"{where}: '{key}' is missing")
            continue
        if not _is(obj[key], kind):
            raise UsageError(f"{where}: '{key}' must be {_WHAT[kind]}, got {json.dumps(obj[key])}")


_WHAT = {"number": "a finite number", "size": "a whole number ≥ 1", "bilinear": '"bilinear"', "false": "false",
         "bool": "true or false", "numbers": "a non-empty list of finite numbers",
         "positive numbers": "a non-empty list of finite numbers above 0", "channels": "1 or 3",
         "range": "[low, high] numbers", "ink": '"high" or "low"', "fit": '"ink-box"'}


def _is(value: Any, kind: str) -> bool:
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return {
        "number": lambda: number(value),
        "size": lambda: isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        "bilinear": lambda: value == "bilinear",
        "false": lambda: value is False,
        "bool": lambda: isinstance(value, bool),
        "numbers": lambda: isinstance(value, list) and bool(value) and all(map(number, value)),
        "positive numbers": lambda: isinstance(value, list) and bool(value) and all(number(v) and v > 0 for v in value),
        "channels": lambda: value in (1, 3) and not isinstance(value, bool),
        "range": lambda: isinstance(value, list) and len(value) == 2 and all(map(number, value)),
        "ink": lambda: value in ("high", "low"),
        "fit": lambda: value == "ink-box",
    }[kind]()
