"""The bundle contract for apps/python: the manifest check (the subset of JSON Schema that
apps/manifest.schema.json uses) and the preprocessing recipe, step by step. numpy only; never edgekit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 4
SCHEMA_FILE = "manifest.schema.json"


class AppError(Exception):
    """Bad input: one line for the user, exit code 2."""


# --- the manifest contract ---------------------------------------------------------------------------------
def schema_errors(value, schema: dict, root: dict, path: str = "manifest") -> list[str]:
    """The subset of JSON Schema that manifest.schema.json uses (it says which keywords), so no package is needed."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:
        if all(schema_errors(value, s, root, path) for s in schema["anyOf"]):
            return [f"{path}: {json.dumps(value)[:60]} matches none of the allowed forms"]
        return []
    kinds = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    want = schema.get("type")
    if want is not None:
        ok = (number if want == "number" else number and float(value).is_integer() if want == "integer" else
              isinstance(value, kinds[want]))
        if not ok:
            return [f"{path}: expected {want}, got {json.dumps(value)[:60]}"]
    if "const" in schema and not _same(value, schema["const"]):
        return [f"{path}: must be {json.dumps(schema['const'])}, got {json.dumps(value)[:60]}"]
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        return [f"{path}: {json.dumps(value)[:60]} is not one of {schema['enum']}"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return [f"{path}: {value} is below {schema['minimum']}"]
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            return [f"{path}: {value} must be above {schema['exclusiveMinimum']}"]
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        return [f"{path}: {json.dumps(value)} is shorter than {schema['minLength']}"]
    errors = []
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: needs at least {schema['minItems']} item(s)")
        for i, item in enumerate(value):
            errors += schema_errors(item, schema.get("items", {}), root, f"{path}[{i}]")
    if isinstance(value, dict):
        errors += [f"{path}: '{k}' is missing" for k in schema.get("required", []) if k not in value]
        props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errors += schema_errors(v, props[k], root, f"{path}.{k}")
            elif extra is False:
                errors.append(f"{path}: unknown key '{k}'")
            elif isinstance(extra, dict):
                errors += schema_errors(v, extra, root, f"{path}.{k}")
    return errors


def _same(a, b) -> bool:
    """JSON equality: true is not 1, 1.0 is 1."""
    return (a is b) if isinstance(a, bool) or isinstance(b, bool) else a == b


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def find_schema(explicit: str | None) -> Path:
    here = Path(__file__).resolve().parent
    for candidate in ([Path(explicit)] if explicit else [here / SCHEMA_FILE, here.parent / SCHEMA_FILE]):
        if candidate.is_file():
            return candidate
    raise AppError(f"{SCHEMA_FILE} not found next to the app or one folder up; copy apps/{SCHEMA_FILE} "
                   "beside edgekit_app.py or pass --schema")


def load_manifest(bundle: Path, schema_path: Path) -> dict:
    path = bundle / "manifest.json" if bundle.is_dir() else bundle
    if not path.is_file():
        raise AppError(f"{path}: no manifest.json there; pass an edgekit bundle folder")
    try:
        manifest = json.loads(path.read_text(), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AppError(f"{path} is not valid JSON ({exc}); rebuild the bundle") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise AppError(f"{path} has manifest schema_version {version}; this app reads version {SCHEMA_VERSION}: "
                       "rebuild the bundle with this edgekit, or use the app that shipped with the bundle's edgekit")
    schema = json.loads(schema_path.read_text())
    errors = schema_errors(manifest, schema, schema)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise AppError(f"{path} fails {schema_path.name}: {errors[0]}{more}; rebuild the bundle")
    return manifest


# --- preprocessing: the manifest's recipe, step by step --------------------------------------------------------
def resize_bilinear(x: np.ndarray, height: int, width: int, antialias: bool) -> np.ndarray:
    """(C, H, W) -> (C, height, width), as torch's bilinear interpolate with align_corners=False does."""
    def weights(n_in: int, n_out: int) -> np.ndarray:
        scale = n_in / n_out
        w = np.zeros((n_out, n_in))
        if antialias and scale > 1:  # a triangle filter stretched over the source pixels each output covers
            for i in range(n_out):
                center = scale * (i + 0.5)
                lo, hi = max(int(center - scale + 0.5), 0), min(int(center + scale + 0.5), n_in)
                taps = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) / scale))
                w[i, lo:hi] = taps / taps.sum()
            return w
        for i in range(n_out):
            src = max((i + 0.5) * scale - 0.5, 0.0)
            i0 = min(int(src), n_in - 1)
            i1 = min(i0 + 1, n_in - 1)
            frac = src - i0
            w[i, i0] += 1.0 - frac
            w[i, i1] += frac
        return w
    rows, cols = weights(x.shape[1], height), weights(x.shape[2], width)
    return np.einsum("oh,chw,pw->cop", rows, x.astype(np.float64), cols)


def preprocess(raw: np.ndarray, recipe: dict) -> np.ndarray:
    """A raw sample (H, W) or (H, W, C) in the recipe's raw range -> one batch of the source input (float32)."""
    x = raw.astype(np.float64)
    x = x[None] if x.ndim == 2 else np.moveaxis(x, -1, 0)  # (C, H, W) while the steps run
    for step in recipe["steps"]:
        if step["op"] == "scale":
            x = x * step["factor"]
        elif step["op"] == "resize":
            x = resize_bilinear(x, step["height"], step["width"], step["antialias"])
        elif step["op"] == "normalize":
            if {len(step["mean"]), len(step["std"])} - {1, x.shape[0]}:
                raise AppError(f"the recipe normalizes {len(step['mean'])} mean(s) over {x.shape[0]} channel(s)")
            mean, std = np.asarray(step["mean"])[:, None, None], np.asarray(step["std"])[:, None, None]
            x = (x - mean) / std
    x = x if recipe["layout"] == "NCHW" else np.moveaxis(x, 0, -1)
    return x[None].astype(np.float32)


def image_to_raw(pixels: np.ndarray, raw: dict) -> np.ndarray:
    """An image (H, W[, C]) of 0..255 -> the raw sample the recipe starts from: its size, channels, range, ink."""
    x = pixels.astype(np.float64) / 255.0
    if x.ndim == 3 and raw["channels"] == 1:
        x = x[..., :3] @ np.array([0.299, 0.587, 0.114]) if x.shape[2] >= 3 else x[..., 0]
    if x.ndim == 2 and raw["channels"] == 3:
        x = np.repeat(x[..., None], 3, axis=2)
    if raw.get("ink") == "high" and x.mean() > 0.5:
        x = 1.0 - x  # dark strokes on light paper: the recipe wants ink as the high value
    if raw.get("ink") == "high":  # stretched: the paper (the median) to 0, the strongest stroke to 1
        paper, top = float(np.median(x)), float(x.max())
        x = np.clip((x - paper) / (top - paper), 0.0, 1.0) if top > paper else x
    planes = x[None] if x.ndim == 2 else np.moveaxis(x, -1, 0)
    if raw.get("fit") == "ink-box":
        planes = fit_ink_box(planes, high=raw.get("ink", "high") == "high")
    planes = resize_bilinear(planes, raw["height"], raw["width"], antialias=True)
    lo, hi = raw["range"][0], raw["range"][1]
    out = lo + np.clip(planes, 0.0, 1.0) * (hi - lo)
    return out[0] if raw["channels"] == 1 else np.moveaxis(out, 0, -1)


def fit_ink_box(planes: np.ndarray, high: bool) -> np.ndarray:
    """The recipe's "fit": "ink-box": crop to the ink's bounding box and pad it to a centred square, as the
    raw samples were made (the digit fills the box whatever its size or place in the image)."""
    ink = planes.max(axis=0) if high else 1.0 - planes.min(axis=0)
    rows, cols = np.nonzero(ink > 0.25)
    if not len(rows):
        return planes
    crop = planes[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    side = max(crop.shape[1:])
    out = np.full((planes.shape[0], side, side), 0.0 if high else 1.0)
    top, left = (side - crop.shape[1]) // 2, (side - crop.shape[2]) // 2
    out[:, top:top + crop.shape[1], left:left + crop.shape[2]] = crop
    return out
