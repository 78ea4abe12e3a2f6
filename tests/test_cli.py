"""The CLI on bad input: one line naming the input, exit 2, no traceback; gates exit 1; stages exit 3."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import main


def run(*args, cwd=None):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code, err, want_code, *needles):
    assert code == want_code, err
    lines = [line for line in err.strip().splitlines() if line.startswith("edgekit:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_model_file(tmp_path):
    code, _, err = run("build", tmp_path / "nope.onnx", "--out", tmp_path)
    assert_one_line_error(code, err, 2, "nope.onnx not found")


def test_corrupt_onnx(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04junk" * 3)
    code, _, err = run("build", bad, "--out", tmp_path)
    assert_one_line_error(code, err, 2, "broken.onnx is not a valid ONNX model")


def test_truncated_onnx(tmp_path, user_models):
    import torch
    from edgekit.sources.load import load_model
    module = load_model(f"{user_models}:make_tiny").module
    good = tmp_path / "good.onnx"
    torch.onnx.export(module, (torch.zeros(1, 1, 8, 8),), str(good), dynamo=False)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, _, err = run("build", cut, "--out", tmp_path)
    assert_one_line_error(code, err, 2, "cut.onnx is not a valid ONNX model")


def test_factory_raises(user_models, tmp_path):
    code, _, err = run("build", f"{user_models}:make_broken", "--out", tmp_path)
    assert_one_line_error(code, err, 2, "make_broken raised ValueError: checkpoint path not configured")


def test_wrong_shaped_npz(user_models, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((20, 1, 9, 9), np.float32))
    code, _, err = run("build", f"{user_models}:make_tiny", "--data", tmp_path / "bad.npz", "--out", tmp_path)
    assert_one_line_error(code, err, 2, "bad.npz", "array 'x' has samples of shape (1, 9, 9)", "expects (1, 8, 8)")


def test_nan_npz(user_models, tmp_path):
    x = np.zeros((20, 1, 8, 8), np.float32)
    x[0, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=x)
    code, _, err = run("build", f"{user_models}:make_tiny", "--data", tmp_path / "nan.npz", "--out", tmp_path)
    assert_one_line_error(code, err, 2, "nan.npz", "array 'x' has 1 NaN/Inf values")


def test_unknown_profile(tmp_path):
    code, _, err = run("build", "--profile", "mobil", "--out", tmp_path)
    assert_one_line_error(code, err, 2, "unknown profile 'mobil'", "did you mean 'mobile'")


def test_unknown_profile_key(tmp_path):
    prof = tmp_path / "board.toml"
    prof.write_text('name = "board"\nextends = "iot"\n[budget]\nflash = 100\n')
    code, _, err = run("build", "--profile", prof, "--out", tmp_path)
    assert_one_line_error(code, err, 2, "board.toml", "unknown key 'budget.flash'")


def test_unknown_format(tmp_path):
    code, _, err = run("build", "--formats", "onnx,tflight", "--out", tmp_path)
    assert_one_line_error(code, err, 2, "unknown format 'tflight'", "did you mean 'tflite'")


def test_existing_output_without_force(tmp_path, user_models, tiny_data):
    (tmp_path / "my_models-make_tiny-iot").mkdir()
    code, _, err = run("build", f"{user_models}:make_tiny", "--data", tiny_data, "--out", tmp_path)
    assert_one_line_error(code, err, 2, "my_models-make_tiny-iot already exists; pass --force")


def test_stage_failure_exits_3_and_names_stage(user_models, tmp_path, fast_profile):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((40, 4)).astype(np.float32))
    code, _, err = run("build", f"{user_models}:make_noisy", "--data", tmp_path / "d.npz", "--profile", fast_profile,
                       "--out", tmp_path / "out")
    assert_one_line_error(code, err, 3, "stage 'validate' failed", "output 'output'")
    # nothing half-written: only the failure log is left
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["my_models-make_noisy-fast.failed.log"]


@pytest.mark.slow
def test_gate_miss_exits_1_and_keeps_bundle(user_models, tiny_data, tmp_path):
    prof = tmp_path / "strict.toml"
    prof.write_text('name = "strict"\nextends = "iot"\n[budget]\np90_latency_ms = 0.0001\n'
                    '[prune]\nmethod = "none"\n[bench]\nwarmup = 2\nruns = 20\nbatch = 4\n')
    code, out, err = run("build", f"{user_models}:make_tiny", "--data", tiny_data, "--profile", prof, "--out", tmp_path,
                         "--formats", "onnx", "--bits", "32")
    assert code == 1, err
    assert "gate missed: p90_latency gate MISSED on my_models.onnx" in err and "limit 0.0001 ms" in err
    manifest = json.loads((tmp_path / "my_models-make_tiny-strict" / "manifest.json").read_text())
    assert manifest["passed"] is False
    assert [g["passed"] for g in manifest["gates"] if g["name"] == "p90_latency"] == [False]


@pytest.mark.slow
def test_user_factory_with_two_inputs_one_int64(user_models, two_input_data, fast_profile, tmp_path):
    code, out, err = run("build", f"{user_models}:make_two_inputs", "--data", two_input_data, "--profile",
                         fast_profile, "--out", tmp_path, "--json", "--formats", "onnx")
    assert code == 0, err
    report = json.loads(out)
    art = report["artifacts"][0]
    assert [(t["name"], t["dtype"]) for t in art["iospec"]["inputs"]] == [("features", "float32"), ("tokens", "int64")]
    assert [t["name"] for t in art["iospec"]["outputs"]] == ["score", "embedding"]
    assert report["data"]["task"] == "generic"
    assert art["validation"]["metrics"]["cosine"] > 0.99999
    assert art["validation"]["outputs"]["embedding"]["max_abs_diff"] < 1e-4
    assert art["bench"]["p50_ms"] > 0


def test_help_is_fast_and_imports_no_heavy_library():
    code = ("import sys, edgekit.cli.main\n"
            "sys.argv=['edgekit','--help']\n"
            "try:\n    edgekit.cli.main.main()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','tensorflow','onnx','onnxruntime','onnx2tf') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "build" in out


def test_profiles_commands():
    code, out, _ = run("profiles")
    assert code == 0 and "rpi4" in out and "extends mobile" in out
    code, out, _ = run("profiles", "show", "stm32h743")
    resolved = json.loads(out)
    assert resolved["budget"]["flash_kb"] == 1536 and resolved["prune"]["max_ratio"] == 0.8


@pytest.mark.slow
def test_a_failing_format_is_listed_and_the_others_ship(user_models, two_input_data, fast_profile, tmp_path):
    """A determinant: ONNX Runtime runs it, onnx2tf can only emit TF's Flex op for it. Given as ONNX (no
    torch module to fall back on), the TFLite format fails: the ONNX files ship, exit 1 names the formats
    gate and the cause."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(tmp_path / "det.onnx"))
    np.savez(tmp_path / "det.npz", x=np.random.default_rng(0).normal(size=(64, 3, 3)).astype(np.float32))
    code, _, err = run("build", tmp_path / "det.onnx", "--data", tmp_path / "det.npz", "--profile", fast_profile,
                       "--out", tmp_path / "out", "--formats", "onnx,tflite")
    assert code == 1, err
    assert "formats gate MISSED on tflite: 0 of 3" in err and "FlexMatrixDeterminant" in err and "Traceback" not in err
    bundle = tmp_path / "out" / "det-fast"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {f["format"] for f in manifest["files"]} == {"onnx"}
    assert all((bundle / f["file"]).is_file() for f in manifest["files"])
    assert not list(bundle.glob("*.tflite"))  # nothing half-made of the failed format
    failed = manifest["failed"]
    assert failed[0]["format"] == "tflite" and failed[0]["stage"] == "export tflite" and "Flex" in failed[0]["reason"]
    assert all(f["format"] == "tflite" for f in failed)  # the int4 and int8 TFLite files are listed as not made
    gates = {(g["name"], g["file"]): g["passed"] for g in manifest["gates"]}
    assert gates[("formats", "onnx")] is True and gates[("formats", "tflite")] is False
    assert "Files not made" in (bundle / "report.md").read_text()


@pytest.mark.slow
def test_the_exit_code_answers_whether_the_model_can_ship(tmp_path):
    """The built-in CNN's fp32 TFLite file (about 1000 KB) misses a 600 KB flash budget while its int8 and int4
    files (about 360 and 230 KB) meet every gate: exit 0, the fp32 file stays, marked and never recommended;
    exit 1 with --strict-gates; and exit 1 naming the format when no file of it fits."""
    def profile(flash_kb):
        path = tmp_path / f"flash{flash_kb}.toml"
        path.write_text(f'name = "flash{flash_kb}"\nextends = "iot"\n[prune]\nmethod = "none"\n[budget]\n'
                        f'flash_kb = {flash_kb}\n[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 2.0\n')
        return path

    code, out, err = run("build", "--profile", profile(600), "--formats", "tflite", "--out", tmp_path / "a")
    assert code == 0, err
    manifest = json.loads((tmp_path / "a" / "digits_cnn-flash600" / "manifest.json").read_text())
    sizes = {f["file"]: f["bytes"] / 1024 for f in manifest["files"]}
    assert sizes["digits_cnn.tflite"] > 600 > max(sizes["digits_cnn_int8.tflite"], sizes["digits_cnn_int4.tflite"])
    flash = {g["file"]: g["passed"] for g in manifest["gates"] if g["name"] == "flash" and g["file"].endswith(".tflite")}
    assert flash == {"digits_cnn.tflite": False, "digits_cnn_int8.tflite": True, "digits_cnn_int4.tflite": True}
    assert manifest["passed"] is True
    assert manifest["recommended"]["litert"]["file"] in ("digits_cnn_int8.tflite", "digits_cnn_int4.tflite")
    kept = next(line for line in out.splitlines() if "missed a gate, kept and never recommended: " in line)
    assert "digits_cnn.tflite" in kept.split(": ", 1)[1].split(", ")  # (and the fp32 ONNX file it is made from)
    assert (tmp_path / "a" / "digits_cnn-flash600" / "digits_cnn.tflite").is_file()

    code, _, err = run("build", "--profile", profile(600), "--formats", "tflite", "--out", tmp_path / "b",
                       "--strict-gates")
    assert code == 1 and "flash gate MISSED on digits_cnn.tflite" in err, err

    code, _, err = run("build", "--profile", profile(100), "--formats", "tflite", "--out", tmp_path / "c")
    assert code == 1, err
    assert "edgekit: verdict: format tflite: no file meets every gate" in err


def test_validate_exits_1_when_the_file_misses_its_tolerance_and_3_on_a_crash(user_models, tiny_data, tmp_path,
                                                                               monkeypatch):
    import torch

    from edgekit.sources.load import load_model

    module = load_model(f"{user_models}:make_tiny").module
    torch.onnx.export(module, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "m.onnx"), dynamo=False, input_names=["x"],
                      output_names=["output"])
    ref = ("--model", f"{user_models}:make_tiny", "--data", tiny_data)
    code, out, err = run("validate", tmp_path / "m.onnx", *ref)
    assert code == 0, err
    other = {k: v + 1.0 for k, v in module.state_dict().items()}  # a reference the file no longer matches
    torch.save(other, tmp_path / "other.pt")
    code, out, err = run("validate", tmp_path / "m.onnx", *ref, "--weights", tmp_path / "other.pt")
    assert code == 1, err  # a verdict, not a crash
    assert "metric drop" in out and err.startswith("edgekit: ") and "Traceback" not in err

    def crash(*args, **kwargs):
        raise RuntimeError("runner fell over")

    monkeypatch.setattr("edgekit.pipeline.validate_file.validate_against", crash)
    code, _, err = run("validate", tmp_path / "m.onnx", *ref)
    assert_one_line_error(code, err, 3, "internal error: RuntimeError: runner fell over")
