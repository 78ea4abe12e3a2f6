"""edgekit nas as a user runs it: the real pipeline (onnx2tf, LiteRT, TFLite-Micro) scoring every trial,
a front, a plot, a bundle; and one line with exit 2 (or 1) for each bad input."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest

from edgekit.core.errors import UsageError
from nas_helpers import tiny_digits

PROFILE = textwrap.dedent("""
    name = "iot-quick"
    extends = "iot"
    [prune]
    method = "none"
    [quantize]
    weight_bits = 8
""")

SPACES = textwrap.dedent('''
    import torch
    from torch import nn


    def raises(trial):
        width = trial.suggest_int("width", 4, 8)
        raise ValueError(f"no layer of width {width}")


    def not_a_module(trial):
        trial.suggest_int("width", 4, 8)
        return "a string"


    def mlp(trial):
        width = trial.suggest_int("width", 8, 32, step=8)
        resolution = trial.suggest_categorical("resolution", [8, 12])
        return nn.Sequential(nn.Flatten(), nn.Linear(resolution * resolution, width), nn.ReLU(), nn.Linear(width, 10))
''')


def edgekit(*args, cwd, timeout=900):
    env = {**os.environ, "EDGEKIT_HOST_LOCK_DIR": str(Path(cwd) / "locks")}
    return subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def workdir(tmp_path):
    (tmp_path / "quick.toml").write_text(PROFILE)
    (tmp_path / "spaces.py").write_text(SPACES)
    np.savez(tmp_path / "d16.npz", **tiny_digits(16))
    np.savez(tmp_path / "d8.npz", **tiny_digits(8))
    return tmp_path


@pytest.mark.slow
def test_two_trials_on_the_real_pipeline_give_a_front_a_plot_and_a_bundle(workdir):
    r = edgekit("nas", "--profile", "quick.toml", "--data", "d16.npz", "--trials", "2", "--proxy-epochs", "1",
                "--grid", "baseline", "--promote", "1", "--final-epochs", "1", "--out", "out", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    folder = workdir / "out" / "builtin-iot-quick"
    study = optuna.load_study(study_name="builtin-iot-quick", storage=f"sqlite:///{folder / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(study.trials) == 2 and done
    for t in done:
        a = t.user_attrs
        assert a["file"].endswith("_int8.tflite") and a["runtime"] == "litert"  # scored in LiteRT
        assert 0 < a["p50_ms"] <= a["p90_ms"] <= a["p99_ms"] and a["bytes"] > 1000
        assert a["arena_bytes"] > 1000 and a["tflm_loads"] is True  # the C array ran in TFLite-Micro
        assert 0.0 <= a["metric"] <= 1.0 and abs(a["drop"] - (a["metric_fp32"] - a["metric"])) < 1e-9
        assert a["untrained_p90_ms"] > 0 and a["train"]["epochs_run"] == 1
    assert study.trials[0].params["resolution"] == 16 and study.trials[0].user_attrs["seed"] == "grid"
    assert study.trials[0].state.name == "COMPLETE"  # the example at 16 px reaches a 1x1 map: TFLite must convert it
    pareto = json.loads((folder / "pareto.json").read_text())
    assert pareto["front"] and pareto["scored"] == {"format": "tflite", "precision": "int8"}
    assert 0 < pareto["hypervolume"] <= 1 and pareto["chosen"] == pareto["promoted"][0]["trial"]
    assert (folder / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifest = json.loads((workdir / pareto["bundle"] / "manifest.json").read_text())
    assert manifest["passed"] and {f["format"] for f in manifest["files"]} >= {"onnx", "tflite", "c_array"}
    assert "Pareto front" in r.stdout and "bundle of trial" in r.stdout


@pytest.mark.slow
def test_a_user_space_with_its_own_resolution(workdir):
    r = edgekit("nas", "--space", "spaces.py:mlp", "--profile", "quick.toml", "--data", "d8.npz", "--trials", "2",
                "--proxy-epochs", "1", "--promote", "0", "--out", "out", cwd=workdir)
    assert r.returncode == 0, r.stderr[-3000:]
    study = optuna.load_study(study_name="mlp-iot-quick", storage=f"sqlite:///{workdir / 'out/mlp-iot-quick/study.db'}")
    for t in study.trials:
        assert t.state.name == "COMPLETE", t.user_attrs.get("failed_reason")
        assert t.user_attrs["resolution"] == t.params["resolution"]  # the data was resized to it


@pytest.mark.parametrize("args,code,words", [
    (["--space", "spaces.py:raises"], 2, ["spaces.py:raises raised ValueError: no layer of width"]),
    (["--space", "spaces.py:not_a_module"], 2, ["spaces.py:not_a_module returned str, not a torch.nn.Module"]),
    (["--space", "spaces.py:absent"], 2, ["'absent' is not a callable"]),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], 2, ["--storage postgresql://", "cannot be opened"]),
    (["--time-budget", "soon"], 2, ["--time-budget soon"]),
    (["--data", "missing.npz"], 2, ["missing.npz"]),
    (["--pick", "quickest"], 2, ["--pick quickest"]),
    (["--space", "spaces.py:mlp", "--space-form", "compound"], 2, ["--space-form compound", "built-in space"]),
])
def test_bad_input_is_one_line_and_exit_2(workdir, args, code, words):
    r = edgekit("nas", "--profile", "quick.toml", "--data", "d8.npz", "--trials", "1", "--promote", "0",
                "--out", "out", *args, cwd=workdir)
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0]


@pytest.mark.slow
def test_a_budget_no_trial_can_meet_exits_1_naming_it(workdir):
    (workdir / "tight.toml").write_text(PROFILE.replace('name = "iot-quick"', 'name = "tight"')
                                        + "[budget]\nflash_kb = 0.5\n")
    r = edgekit("nas", "--profile", "tight.toml", "--data", "d8.npz", "--trials", "2", "--grid", "baseline",
                "--out", "out", cwd=workdir)
    assert r.returncode == 1, r.stderr
    assert "every trial broke flash_kb 0.5" in r.stderr and "Traceback" not in r.stderr
    trials = (workdir / "out/builtin-tight/trials.csv").read_text().splitlines()
    assert len(trials) == 3 and all(",precheck," in row for row in trials[1:])  # rejected before training


def test_without_optuna_the_line_says_how_to_install_it(workdir):
    code = "import sys; sys.modules['optuna'] = None; from edgekit.cli.main import main; main()"
    r = subprocess.run([sys.executable, "-c", code, "nas", "--trials", "1", "--out", "out"], cwd=workdir,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "edgekit: error: edgekit nas needs Optuna, which is not installed: pip install 'edgekit[nas]'"]


@pytest.mark.parametrize("verdict,code,lines", [
    ({}, 0, []),
    ({"missed": "no feasible trial: of 2 measured, flash_kb 0.5 broken by 2"}, 1,
     ["edgekit: budget missed: no feasible trial: of 2 measured, flash_kb 0.5 broken by 2"]),
    ({"chosen": 3, "bundle_passed": False, "failed": [("p90_latency", 2.5, 1.0, "ms"), ("rss", 40.0, 32.0, "MB")]}, 1,
     ["edgekit: gate missed: p90_latency gate MISSED on m_int8.tflite: 2.5 ms vs limit 1 ms",
      "edgekit: gate missed: rss gate MISSED on m_int8.tflite: 40 MB vs limit 32 MB"]),
])
def test_the_cli_alone_maps_the_verdict_to_the_exit_code(tmp_path, monkeypatch, verdict, code, lines):
    from click.testing import CliRunner

    from edgekit.archsearch import NasResult
    from edgekit.cli.main import main
    from edgekit.measure.gates import Gate

    seen = {}

    def fake_nas(space, options, *, progress=None):
        seen["options"] = options
        gates = [Gate(name, "m_int8.tflite", value, limit, unit, False) for name, value, limit, unit
                 in verdict.get("failed", [])]
        chosen = verdict.get("chosen")
        return NasResult("s", tmp_path, "sqlite:///x", {"COMPLETE": 2}, [], 0.5, (0.0, 1.0), chosen=chosen,
                         bundle=tmp_path / "b" if chosen else None, bundle_passed=verdict.get("bundle_passed"),
                         missed=verdict.get("missed"), failed_gates=gates)

    monkeypatch.setattr("edgekit.archsearch.nas", fake_nas)
    r = CliRunner().invoke(main, ["nas", "--trials", "2", "--pick", "3", "--space-form", "compound",
                                  "--hv-ref", "0.5,2", "--out", str(tmp_path)])
    assert r.exit_code == code, r.output
    assert [line for line in r.stderr.splitlines() if line.startswith("edgekit:")] == lines
    opts = seen["options"]  # built once by the CLI, every flag in it
    assert (opts.trials, opts.pick, opts.form, opts.hv_reference, opts.out) == (2, "3", "compound", (0.5, 2.0),
                                                                                 str(tmp_path))


def test_a_bad_option_value_names_its_flag(tmp_path):
    from edgekit.cli.nas import nas_options

    with pytest.raises(UsageError, match=r"^--hv-ref \(0.5, -1.0\): must be \(metric, p90 ms\) with a p90 > 0$"):
        nas_options(hv_reference=(0.5, -1.0))
    with pytest.raises(UsageError, match=r"^--promote -1: must be an integer >= 0$"):
        nas_options(promote_k=-1)
