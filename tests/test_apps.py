"""apps/: the manifest contract, the Python app (locally and over ssh) and the schema refusals of every app.
The browser app has its own file (test_apps_web.py), the MCU harness too (test_apps_mcu.py)."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess

import numpy as np
import pytest
from apps_helpers import SCHEMA, js_schema_errors, raw_heldout_digits, run_py_app, schema_problems

from edgekit.pipeline.validate_file import validate_against


def _manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


@pytest.mark.slow
def test_the_example_bundle_carries_what_an_app_needs(apps_bundle):
    manifest = _manifest(apps_bundle)
    assert schema_problems(manifest) == []
    assert manifest["schema_version"] == 4 and manifest["labels"] == [str(i) for i in range(10)]
    recipe = manifest["preprocessing"]
    assert recipe["input"] == "image" and recipe["layout"] == "NCHW"
    assert recipe["raw"] == {"height": 8, "width": 8, "channels": 1, "range": [0.0, 16.0], "ink": "high", "fit": "ink-box"}
    assert [s["op"] for s in recipe["steps"]] == ["scale", "resize", "normalize"]
    files = {f["file"]: f for f in manifest["files"]}
    assert set(manifest["recommended"]) == {"onnxruntime", "litert"}
    assert all(manifest["recommended"][r]["file"] in files for r in manifest["recommended"])
    tfl = files["digits_cnn_int8.tflite"]["iospec"]["inputs"][0]
    assert tfl["layout"] == "NHWC" and tfl["source_perm"] == [0, 2, 3, 1] and tfl["source_name"] == "image"
    assert "quantization" not in tfl  # float I/O: the file quantizes inside


@pytest.mark.slow
def test_int8_io_files_carry_their_quantization(int8_io_build, tmp_path):
    """Built with --int8-io: the TFLite int8 file takes and gives int8; the manifest holds each tensor's scale
    and zero point as the file has them, the C array's entry names its ops header and arena, and the Python
    app, quantizing float digits with them, gets the labels `edgekit validate` gets."""
    from ai_edge_litert.interpreter import Interpreter

    apps_bundle = int8_io_build.bundle
    files = {f["file"]: f for f in _manifest(apps_bundle)["files"]}
    entry = files["digits_cnn_int8.tflite"]
    tin, tout = entry["iospec"]["inputs"][0], entry["iospec"]["outputs"][0]
    assert tin["dtype"] == "int8" and tout["dtype"] == "int8"
    interp = Interpreter(model_path=str(apps_bundle / entry["file"]))
    for spec, detail in ((tin, interp.get_input_details()[0]), (tout, interp.get_output_details()[0])):
        scale, zero = detail["quantization"]
        assert spec["quantization"] == {"scale": pytest.approx(scale), "zero_point": zero, "dtype": "int8"}
    assert "quantization" not in files["digits_cnn.tflite"]["iospec"]["inputs"][0]  # float I/O: none
    mcu = files["digits_cnn_model_data.cc"]["mcu"]
    assert mcu["embeds"] == "digits_cnn_int8.tflite" and mcu["unregistered_ops"] == []
    assert mcu["ops_header"] == "digits_cnn_model_ops.h" and (apps_bundle / mcu["ops_header"]).is_file()
    assert mcu["arena_bytes"] == mcu["arena_bytes_measured"] and mcu["arena_bytes_with_margin"] > mcu["arena_bytes"]
    _labels_agree(apps_bundle, "digits_cnn_int8.tflite", tmp_path, required=99 / 100)


def _labels_agree(bundle, file, tmp_path, required: float) -> float:
    """The Python app on the raw held-out digits vs `edgekit validate --save-outputs` on the same file."""
    raw, _ = raw_heldout_digits()
    np.save(tmp_path / "raw.npy", raw)
    saved = tmp_path / f"{file}.npz"
    validate_against(bundle / file, save_outputs=saved)
    ref = np.load(saved)
    lines = run_py_app(bundle, tmp_path / "raw.npy", "--file", file, "--json").stdout.splitlines()
    app = np.array([json.loads(line)["index"] for line in lines])[ref["index"]]
    agreement = float((app == ref["logits"].argmax(1)).mean())
    assert len(lines) == len(raw) and agreement >= required, (file, agreement)
    return agreement


@pytest.mark.slow
@pytest.mark.parametrize("file, required", [("digits_cnn.onnx", 1.0), ("digits_cnn.tflite", 1.0),
                                            ("digits_cnn_int8.onnx", 404 / 405), ("digits_cnn_int8.tflite", 404 / 405)])
def test_python_app_labels_match_edgekit_validate(apps_bundle, tmp_path, file, required):
    """The same file in the same runtime: every label for fp32 files. An int8 file quantizes its input inside,
    so a float difference of 1e-7 between the app's recipe and torch's resize can move a sample across a
    rounding step: at most one of the 405 may differ."""
    _labels_agree(apps_bundle, file, tmp_path, required)


@pytest.mark.slow
def test_python_app_picks_the_recommended_file_and_reads_images(apps_bundle, tmp_path):
    manifest = _manifest(apps_bundle)
    raw, labels = raw_heldout_digits()
    np.save(tmp_path / "one.npy", raw[0])
    for runtime in ("onnxruntime", "litert"):
        out = json.loads(run_py_app(apps_bundle, tmp_path / "one.npy", "--runtime", runtime, "--json").stdout)
        assert out["file"] == manifest["recommended"][runtime]["file"] and out["label"] == str(labels[0])
        assert sum(out["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    # a scanned digit: dark ink on white paper, 64x64, as a binary PGM (numpy alone reads it)
    big = np.kron(raw[0], np.ones((8, 8)))
    pixels = (255 - big * 255 / 16).astype(np.uint8)
    (tmp_path / "scan.pgm").write_bytes(b"P5 64 64 255\n" + pixels.tobytes())
    out = json.loads(run_py_app(apps_bundle, tmp_path / "scan.pgm", "--json").stdout)
    assert out["label"] == str(labels[0])


@pytest.mark.slow
def test_python_app_over_ssh_on_the_loopback_device(apps_bundle, sshd, tmp_path):
    """Copied to the "device" with OpenSSH's scp and run there with ssh, as a user deploys to a board: only the
    app, the schema and the bundle travel. Its labels match `edgekit validate` on the host."""
    raw, _ = raw_heldout_digits()
    np.save(tmp_path / "raw.npy", raw[:120])
    ssh = ["-i", str(sshd.identity), "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
           "-o", "BatchMode=yes"]
    target = f"{sshd.user}@127.0.0.1"
    remote = f"/tmp/edgekit-app-{sshd.port}"
    manifest = _manifest(apps_bundle)
    files = [apps_bundle / "manifest.json"] + [apps_bundle / f["file"] for f in manifest["files"]
                                               if f["runtime"] in ("onnxruntime", "litert")]
    from apps_helpers import PY_APP
    try:
        subprocess.run(["ssh", *ssh, "-p", str(sshd.port), target, f"mkdir -p {remote}/bundle"], check=True, timeout=60)
        subprocess.run(["scp", *ssh, "-P", str(sshd.port), str(PY_APP), str(PY_APP.with_name("bundle_contract.py")),
                        str(SCHEMA), str(tmp_path / "raw.npy"), f"{target}:{remote}/"], check=True, timeout=60)
        subprocess.run(["scp", *ssh, "-P", str(sshd.port), *map(str, files), f"{target}:{remote}/bundle/"],
                       check=True, timeout=120)
        import sys
        got = {}
        for runtime in ("onnxruntime", "litert"):
            proc = subprocess.run(["ssh", *ssh, "-p", str(sshd.port), target,
                                   f"cd {remote} && {sys.executable} edgekit_app.py bundle raw.npy --runtime {runtime} "
                                   "--json"], capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
            got[runtime] = [json.loads(line) for line in proc.stdout.splitlines()]
    finally:
        subprocess.run(["ssh", *ssh, "-p", str(sshd.port), target, f"rm -rf {remote}"], timeout=60)
    for runtime, results in got.items():
        file = results[0]["file"]
        assert file == manifest["recommended"][runtime]["file"]
        saved = tmp_path / f"{runtime}.npz"
        validate_against(apps_bundle / file, save_outputs=saved)
        ref = np.load(saved)
        keep = ref["index"] < 120
        app = np.array([r["index"] for r in results])[ref["index"][keep]]
        assert (app == ref["logits"][keep].argmax(1)).mean() >= 0.98, runtime


def _broken(manifest: dict) -> dict[str, dict]:
    """Manifests that fail the schema, each in one way an app would otherwise misread."""
    cases = {}
    def case(name, change):
        m = copy.deepcopy(manifest)
        change(m)
        cases[name] = m
    case("old version", lambda m: m.update(schema_version=3))
    case("unknown dtype", lambda m: m["files"][0]["iospec"]["inputs"][0].update(dtype="float99"))
    case("unknown step", lambda m: m["preprocessing"]["steps"].append({"op": "sharpen"}))
    case("no files", lambda m: m.update(files=[]))
    case("zero std", lambda m: m["preprocessing"]["steps"][2].update(std=[0.0]))
    case("no iospec", lambda m: m["files"][1].pop("iospec"))
    case("string bytes", lambda m: m["files"][0].update(bytes="453590"))
    case("unknown key", lambda m: m.update(colour="red"))
    case("true for 1", lambda m: m["preprocessing"]["raw"].update(channels=True))
    case("0 for false", lambda m: m["preprocessing"]["steps"][1].update(align_corners=0))
    return cases


@pytest.mark.slow
def test_every_app_validator_agrees_with_jsonschema(apps_bundle):
    manifest = _manifest(apps_bundle)
    import sys
    sys.path.insert(0, str(SCHEMA.parent / "python"))
    try:
        from bundle_contract import schema_errors
    finally:
        sys.path.pop(0)
    schema = json.loads(SCHEMA.read_text())
    assert schema_errors(manifest, schema, schema) == [] and js_schema_errors(manifest) == []
    for name, bad in _broken(manifest).items():
        assert schema_problems(bad), name  # the reference validator rejects it...
        assert schema_errors(bad, schema, schema), name  # ...and so do the Python app's
        assert js_schema_errors(bad), name  # ...and the web app's
    fine = copy.deepcopy(manifest)
    fine["files"][0]["bytes"] = float(fine["files"][0]["bytes"])  # 1.0 is an integer in JSON Schema
    assert schema_problems(fine) == [] and schema_errors(fine, schema, schema) == [] and js_schema_errors(fine) == []


@pytest.mark.slow
def test_python_app_refuses_a_bad_manifest_with_one_line(apps_bundle, tmp_path):
    raw, _ = raw_heldout_digits()
    np.save(tmp_path / "one.npy", raw[0])
    for name, bad in _broken(_manifest(apps_bundle)).items():
        folder = tmp_path / f"invalid-{name.replace(' ', '-')}"
        shutil.copytree(apps_bundle, folder)
        (folder / "manifest.json").write_text(json.dumps(bad))
        proc = run_py_app(folder, tmp_path / "one.npy", check=False)
        assert proc.returncode == 2 and proc.stdout == "", (name, proc.stdout)
        line = proc.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, (name, line)
        if name == "old version":
            assert "schema_version 3; this app reads version 4" in line
        else:
            assert "fails manifest.schema.json" in line and "rebuild the bundle" in line, (name, line)
    proc = run_py_app(tmp_path / "nowhere", tmp_path / "one.npy", check=False)
    assert proc.returncode == 2 and "no manifest.json there" in proc.stderr
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan))
    proc = run_py_app(apps_bundle, tmp_path / "nan.npy", check=False)
    assert proc.returncode == 2 and "NaN" in proc.stderr


USER_RECIPE = {"input": "x", "description": "8-bit grey 8x8 images",
               "raw": {"height": 8, "width": 8, "channels": 1, "range": [0, 255]},
               "steps": [{"op": "scale", "factor": 1 / 255}, {"op": "normalize", "mean": [0.5], "std": [0.25]}]}


@pytest.mark.slow
def test_a_users_model_with_labels_and_a_recipe_reaches_the_apps(user_models, tiny_data, fast_profile, tmp_path):
    """`edgekit build my_models.py:make_tiny --labels … --preprocessing …`: the manifest carries both, and the
    Python app on raw 0..255 images gives what ONNX Runtime gives on the recipe's output computed here."""
    from click.testing import CliRunner

    from edgekit.cli.main import main

    (tmp_path / "labels.txt").write_text("cat\ndog\nbird\n")
    (tmp_path / "recipe.json").write_text(json.dumps(USER_RECIPE))
    args = ["build", f"{user_models}:make_tiny", "--data", str(tiny_data), "--profile", str(fast_profile),
            "--formats", "onnx", "--out", str(tmp_path / "out"), "--labels", str(tmp_path / "labels.txt"),
            "--preprocessing", str(tmp_path / "recipe.json")]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    bundle = next((tmp_path / "out").iterdir())
    manifest = _manifest(bundle)
    assert schema_problems(manifest) == [] and manifest["labels"] == ["cat", "dog", "bird"]
    assert manifest["preprocessing"]["steps"] == USER_RECIPE["steps"] and manifest["preprocessing"]["layout"] == "NCHW"
    raw = np.random.default_rng(1).integers(0, 256, (30, 8, 8)).astype(np.float32)
    np.save(tmp_path / "raw.npy", raw)
    lines = run_py_app(bundle, tmp_path / "raw.npy", "--file", "my_models-make_tiny.onnx" if (
        bundle / "my_models-make_tiny.onnx").exists() else manifest["files"][0]["file"], "--json").stdout.splitlines()
    import onnxruntime as ort
    session = ort.InferenceSession(str(bundle / manifest["files"][0]["file"]), providers=["CPUExecutionProvider"])
    x = ((raw / 255 - 0.5) / 0.25)[:, None].astype(np.float32)
    expected = session.run(None, {"x": x})[0].argmax(1)
    got = [json.loads(line) for line in lines]
    assert [g["index"] for g in got] == expected.tolist()
    assert {g["label"] for g in got} <= {"cat", "dog", "bird"}


@pytest.mark.parametrize("recipe, message", [
    ({"steps": [{"op": "blur"}]}, "steps[0].op must be one of scale, resize, normalize, got 'blur'"),
    ({"steps": [{"op": "normalize", "mean": [0.5]}]}, "steps[0] (normalize): 'std' is missing"),
    ({"steps": [{"op": "normalize", "mean": [0.5], "std": [0]}]}, "'std' must be a non-empty list of finite numbers above 0"),
    ({"steps": [], "input": "image"}, "'input' must name one of the model's inputs (x), got 'image'"),
    ({"steps": [], "colour": 1}, "unknown key 'colour'"),
    ({"steps": [], "raw": {"height": 8, "width": 8, "channels": 2, "range": [0, 1]}}, "'channels' must be 1 or 3"),
    ({"steps": [], "raw": {"height": 8, "width": 8, "channels": 3, "range": [0, 1]}},
     "raw has 3 channel(s), input 'x' 1"),
    ({"steps": [{"op": "resize", "height": 16, "width": 16, "method": "bilinear", "align_corners": False,
                 "antialias": False}]}, "the steps end at height 16, input 'x' takes 8"),
    ({"steps": [{"op": "normalize", "mean": [0.5, 0.5, 0.5], "std": [0.2]}]}, "'mean' has 3 values for 1 channel(s)"),
    ({"steps": [{"op": "scale", "factor": float("nan")}]}, "'factor' must be a finite number"),
])
def test_a_bad_recipe_or_labels_file_exits_2_naming_the_key(user_models, tiny_data, tmp_path, recipe, message):
    from click.testing import CliRunner

    from edgekit.cli.main import main

    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    result = CliRunner().invoke(main, ["build", f"{user_models}:make_tiny", "--data", str(tiny_data), "--out",
                                       str(tmp_path / "out"), "--preprocessing", str(tmp_path / "recipe.json")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_labels_must_match_the_classes(user_models, tiny_data, tmp_path):
    from click.testing import CliRunner

    from edgekit.cli.main import main

    (tmp_path / "labels.json").write_text('["a", "b"]')
    result = CliRunner().invoke(main, ["build", f"{user_models}:make_tiny", "--data", str(tiny_data), "--out",
                                       str(tmp_path / "out"), "--labels", str(tmp_path / "labels.json")])
    assert result.exit_code == 2 and "2 labels, but the model's first output" in result.output, result.output
    assert "has 3 classes" in result.output


def test_both_apps_turn_an_image_into_the_same_input():
    """apps/python and apps/web each implement the recipe (ink, ink-box fit, antialiased resize, steps): on a
    scan-like image (dark strokes on light paper, off-centre) they give the same model input."""
    import sys

    from apps_helpers import WEB

    from edgekit.examples.digits import PREPROCESSING
    sys.path.insert(0, str(SCHEMA.parent / "python"))
    try:
        from bundle_contract import image_to_raw, preprocess
    finally:
        sys.path.pop(0)
    rng = np.random.default_rng(0)
    gray = np.full((60, 90), 230.0)
    gray[10:50, 40:48] = 20  # a "1", off-centre on a wide page
    gray[10:14, 34:48] = 30
    gray = np.clip(gray + rng.normal(0, 5, gray.shape), 0, 255).astype(np.uint8)
    py = preprocess(image_to_raw(gray, PREPROCESSING["raw"]), PREPROCESSING)
    rgba = np.stack([gray, gray, gray, np.full_like(gray, 255)], axis=-1)
    script = ("import {imageToRaw, preprocess} from './manifest.js'; import fs from 'fs';"
              "const a = JSON.parse(fs.readFileSync(0)); const img = {width: a.w, height: a.h, data: a.data};"
              "const x = preprocess(imageToRaw(img, a.recipe.raw), a.recipe);"
              "console.log(JSON.stringify({shape: x.shape, data: Array.from(x.data)}));")
    payload = json.dumps({"w": 90, "h": 60, "data": rgba.ravel().tolist(), "recipe": PREPROCESSING})
    proc = subprocess.run(["node", "--input-type=module", "-e", script], input=payload, capture_output=True,
                          text=True, cwd=WEB, timeout=60)
    assert proc.returncode == 0, proc.stderr
    js = json.loads(proc.stdout)
    assert js["shape"] == list(py.shape) == [1, 1, 32, 32]
    assert np.abs(np.array(js["data"]).reshape(py.shape) - py).max() < 1e-4
    assert py.max() > 2.0  # the stroke is there, normalised: not an empty page


def test_save_outputs_needs_an_npz_name_before_any_work(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli.main import main

    (tmp_path / "m.onnx").write_bytes(b"not read")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "m.onnx"), "--save-outputs", str(tmp_path / "o.txt")])
    assert result.exit_code == 2 and "give a file name ending in .npz" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o.txt").exists()
