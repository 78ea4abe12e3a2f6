"""What the apps tests share: the example bundle built for them, the raw digits behind its validation split,
the schema, and the apps' entry points run as a user runs them (a subprocess, no edgekit import)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "apps"
SCHEMA = APPS / "manifest.schema.json"
LM_SCHEMA = APPS / "lm_manifest.schema.json"  # manifests of kind causal-lm
PY_APP = APPS / "python" / "edgekit_app.py"
WEB = APPS / "web"

# iot with 8-bit files and no pruning, for the int8-I/O build (the TFLite files and the C array).
APPS_PROFILE = """name = "apps"
extends = "iot"
[prune]
method = "none"
[quantize]
weight_bits = 8
[bench]
warmup = 2
runs = 20
batch = 4
max_seconds = 1.0
attempt_runs = 10
attempt_max_seconds = 0.3
"""


def build_for_apps(folder: Path):
    """The example's TFLite files and C array with int8 inputs and outputs (--int8-io, on smaller splits): the
    int8 file takes and gives int8 with the manifest's scale and zero point, which the apps and the MCU
    harness apply."""
    from edgekit import build

    profile = folder / "apps.toml"
    profile.write_text(APPS_PROFILE)
    return build(profile=profile, out=folder / "out", int8_io=True, formats=("tflite", "c_array"),
                 calib_samples=64, val_samples=100)


def raw_heldout_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits (0..16) of the example's held-out split, in the order of its data file, and their labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, held = train_test_split(np.arange(len(digits.images)), test_size=0.3, random_state=0, stratify=digits.target)
    return digits.images[held], digits.target[held]


def schema_problems(manifest: dict) -> list[str]:
    """What breaks the manifest's schema: a language-model bundle's (kind causal-lm) or the one-shot one."""
    schema = LM_SCHEMA if manifest.get("kind") == "causal-lm" else SCHEMA
    validator = jsonschema.Draft202012Validator(json.loads(schema.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def run_py_app(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(PY_APP), *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def js_schema_errors(manifest: dict) -> list[str]:
    """The web app's own validator (apps/web/manifest.js) run by node on the manifest."""
    script = ("import {schemaErrors} from './manifest.js'; import fs from 'fs';"
              "const s = JSON.parse(fs.readFileSync(process.argv[1])); const m = JSON.parse(fs.readFileSync(0));"
              "console.log(JSON.stringify(schemaErrors(m, s, s)));")
    proc = subprocess.run(["node", "--input-type=module", "-e", script, str(SCHEMA)], input=json.dumps(manifest),
                          capture_output=True, text=True, cwd=WEB, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
