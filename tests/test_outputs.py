"""Every output counts: output tasks, per-output judging, pairing by name or shape, layouts, speed verdicts,
pruning granularity, transfer splits, and the smaller findings of the model-family pass, each with a number
or an exact error line."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import main
from edgekit.measure.compare import verdict
from edgekit.core.data import prepare
from edgekit.core.errors import StageError, UsageError
from edgekit.export.tflite import pair_tensors
from edgekit.core.iospec import IOSpec, TensorSpec, layout_fit, spec_from_array
from edgekit.core.metrics import infer_output_task, output_fidelity, parse_output_task
from edgekit.measure.validate import Reference, judge


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_output_tasks_are_inferred_from_the_source_outputs():
    rng = np.random.default_rng(0)
    assert infer_output_task(softmax(rng.normal(size=(50, 2)))) == "distribution"
    assert infer_output_task(softmax(rng.normal(size=(5, 2, 7, 9)))) == "distribution"  # a map, softmax on axis 1
    assert infer_output_task(1 / (1 + np.exp(-rng.normal(size=(50, 1))))) == "probability:0.5"
    assert infer_output_task(rng.normal(size=(50, 4))) == "regression"
    assert infer_output_task(rng.integers(0, 3, (50, 4))) == "regression"


def test_output_task_parsing_and_refusals():
    assert parse_output_task("probability:0.6") == ("probability", 0.6)
    assert parse_output_task("probability") == ("probability", 0.5)
    assert parse_output_task("regression") == ("regression", None)
    for bad, needle in (("box", "not one of"), ("probability:2", "in (0, 1)"), ("regression:0.3", "only probability"),
                        ("probability:x", "must be a number")):
        with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_output_task(bad)


def test_fidelity_per_task():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.3, 0.7]])
    got = np.array([[0.8, 0.2], [0.3, 0.7], [0.45, 0.55], [0.3, 0.7]])
    d = output_fidelity("distribution", got, ref)
    assert d["top1_agreement"] == pytest.approx(0.75) and d["drop"] == pytest.approx(0.25)
    p = output_fidelity("probability:0.6", got, ref)  # 0.9/0.8, 0.8/0.7 and 0.7/0.7 keep their side of 0.6
    assert p["threshold_agreement"] == pytest.approx(1.0) and p["above_threshold_reference"] == 3
    r = output_fidelity("regression", got, ref)
    assert "top1_agreement" not in r and r["mae"] == pytest.approx(np.mean(np.abs(got - ref)))
    assert r["drop"] == pytest.approx(1 - r["cosine"])


def test_the_worst_output_decides_and_each_is_reported():
    rng = np.random.default_rng(1)
    box = rng.normal(size=(40, 4))
    prob = softmax(rng.normal(size=(40, 2)))
    ref = Reference({"box": box, "prob": prob}, {}, "generic", "box",
                    output_tasks={"box": "regression", "prob": "distribution"})
    flipped = prob[:, ::-1].copy()
    flipped[:30] = prob[:30]  # 10 of 40 rows change their class
    metrics, drop, per, decided = judge({"box": box * 1.0001, "prob": flipped}, ref, None)
    assert decided == "prob" and drop == pytest.approx(per["prob"]["drop"])
    assert per["prob"]["top1_agreement"] <= 0.75 and per["box"]["cosine"] > 0.9999
    assert "top1_agreement" not in metrics  # the box regression is not a class distribution


def test_labelled_output_keeps_its_task_metric():
    logits = np.eye(3)[[0, 1, 2, 0]] * 5.0
    ref = Reference({"logits": logits}, {"top1": 1.0}, "classification", "logits", output_tasks={"logits": "regression"})
    metrics, drop, per, decided = judge({"logits": logits[[1, 1, 2, 0]]}, ref, np.array([0, 1, 2, 0]))
    assert metrics["top1"] == pytest.approx(0.75) and drop == pytest.approx(0.25)
    assert per["logits"]["task"] == "classification (labels)" and "top1_agreement" in metrics


def _t(name, shape, dtype="float32", layout=None):
    return TensorSpec(name, tuple(shape), dtype, layout)


def test_layout_fit_prefers_the_permutation_matching_more_fixed_axes():
    source = _t("prob_map", ("batch", 2, "height", "width"), layout="NCHW")
    assert layout_fit(_t("o", ("batch", "h", "w", 2), layout="NHWC"), source) == ((0, 2, 3, 1), 1)
    square = _t("x", ("batch", 8, 8, 8), layout="NCHW")
    assert layout_fit(_t("y", ("batch", 8, 8, 8), layout="NHWC"), square)[0] == (0, 2, 3, 1)  # the file says NHWC
    with pytest.raises(ValueError, match="does not fit"):
        layout_fit(_t("o", ("batch", 43, 59, 4)), _t("s", ("batch", 2, 43, 59)))


def test_outputs_pair_by_signature_name_then_by_shape():
    source = [_t("box", ("batch", 4)), _t("landmarks", ("batch", 10)), _t("prob", ("batch", 2))]
    # TF orders a signature's outputs by name and calls the tensors PartitionedCall:N
    file = [_t("PartitionedCall:0", ("batch", 4)), _t("PartitionedCall:1", ("batch", 10)),
            _t("PartitionedCall:2", ("batch", 2))]
    names = {"PartitionedCall:0": "landmarks", "PartitionedCall:1": "box", "PartitionedCall:2": "prob"}
    wrong_shapes = [_t(f.name, s.shape) for f, s in zip(file, [source[1], source[0], source[2]])]
    pairs = pair_tensors(wrong_shapes, source, names, "m.tflite", "outputs")
    assert [(f.name, s.name) for f, s in pairs] == [("PartitionedCall:1", "box"), ("PartitionedCall:0", "landmarks"),
                                                    ("PartitionedCall:2", "prob")]
    unnamed = pair_tensors(list(reversed(file)), source, {}, "m.tflite", "outputs")  # no names: shapes decide
    assert [(f.name, s.name) for f, s in unnamed] == [("PartitionedCall:0", "box"), ("PartitionedCall:1", "landmarks"),
                                                      ("PartitionedCall:2", "prob")]
    maps = [_t("prob_map", ("batch", 2, "h", "w"), layout="NCHW"), _t("box_map", ("batch", 4, "h", "w"), layout="NCHW")]
    nhwc = [_t("Identity_1", ("batch", "a", "b", 4), layout="NHWC"), _t("Identity", ("batch", "a", "b", 2), layout="NHWC")]
    assert [(f.name, s.name) for f, s in pair_tensors(nhwc, maps, {}, "m.tflite", "outputs")] == \
        [("Identity", "prob_map"), ("Identity_1", "box_map")]


def test_ambiguous_pairing_is_a_stage_failure_naming_the_outputs():
    source = [_t("left", ("batch", 4)), _t("right", ("batch", 4))]
    file = [_t("PartitionedCall:0", ("batch", 4)), _t("PartitionedCall:1", ("batch", 4))]
    with pytest.raises(StageError, match=r"cannot pair the outputs of m.tflite.*more than one pairing.*left"):
        pair_tensors(file, source, {}, "m.tflite", "outputs")


def test_speed_verdicts_need_every_round_to_agree():
    assert verdict([1.0] * 5, [0.8, 0.81, 0.79, 0.8, 0.82])["verdict"] == "faster"
    assert verdict([1.0] * 5, [1.2, 1.25, 1.3, 1.2, 1.22])["verdict"] == "slower"
    noisy = verdict([1.0, 1.0, 1.0, 1.0, 1.0], [1.1, 0.9, 1.02, 0.97, 1.15])  # microsecond noise either way
    assert noisy["verdict"] == "tied" and 0.8 < noisy["speedup"] < 1.2


def test_channel_rounding_only_where_the_cut_is_a_whole_step():
    import torch
    from torch import nn

    from edgekit.prune.structured import layer_ratios, prune_structured

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 64, 3), nn.ReLU(), nn.Conv2d(64, 4, 1))
    ratios = {id(k): v for k, v in layer_ratios(net, 0.1, 8, protect={"4"}).items()}
    assert ratios[id(net[0])] == pytest.approx((2 - 0.5) / 16)  # 1.6 channels: exactly 2, not a step of 8
    assert ratios[id(net[2])] == pytest.approx((6 - 0.5) / 64)  # 6.4 channels, under one step of 8: exactly 6
    ratios = {id(k): v for k, v in layer_ratios(net, 0.25, 8, protect={"4"}).items()}
    assert ratios[id(net[2])] == pytest.approx((16 - 0.5) / 64)  # 16 channels: two whole steps
    before = sum(p.numel() for p in net.parameters())
    prune_structured(net, (torch.zeros(1, 3, 12, 12),), 0.1, importance="l2", round_to=8, protect={"4"})
    assert (net[0].out_channels, net[2].out_channels) == (14, 58)
    assert 0.05 < 1 - sum(p.numel() for p in net.parameters()) / before < 0.2  # ratio 0.1 cuts ~10%, not 50%


def test_transfer_split_is_set_aside_from_validation():
    x = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    spec = IOSpec((spec_from_array("x", x),), (spec_from_array("y", x[:, :2]),))
    d = prepare({"x": x}, spec, source="s.npz", transfer=0.4)
    assert (len(d.calibration), len(d.train), len(d.validation)) == (75, 90, 135) and d.train_kind == "transfer"
    seen = {r.tobytes() for r in d.validation.inputs["x"]}
    assert not seen & {r.tobytes() for r in d.train.inputs["x"]}
    assert d.summary()["labels"] is False and any("transfer split" in n for n in d.notes)
    plain = prepare({"x": x}, spec, source="s.npz")
    assert plain.train is None and len(plain.validation) == 225


def test_too_many_calibration_samples_names_the_counts():
    x = np.zeros((300, 4), np.float32)
    spec = IOSpec((spec_from_array("x", x),), (spec_from_array("y", x),))
    with pytest.raises(UsageError, match="300 samples cannot give 400 for calibration and leave any for validation"):
        prepare({"x": x}, spec, source="s.npz", calib_samples=400)


def test_unwritable_out_is_exit_2_before_loading(tmp_path):
    # /proc takes no new folders, for root too: the check writes, it does not read permission bits
    code, _, err = run("build", tmp_path / "missing.py:make", "--out", "/proc/edgekit-out/bundles")
    assert code == 2 and "--out /proc/edgekit-out/bundles: /proc is not writable" in err
    assert "missing.py" not in err  # refused before the model is looked at


def test_out_that_is_a_file_is_exit_2(tmp_path):
    (tmp_path / "f").write_text("x")
    code, _, err = run("build", "--out", tmp_path / "f")
    assert code == 2 and "is a file, not a folder" in err
    code, _, err = run("build", "--out", tmp_path / "f" / "sub")
    assert code == 2 and "is a file, not a folder" in err


def test_misnamed_data_array_names_the_arrays(tmp_path):
    models = tmp_path / "m.py"
    models.write_text("import torch\nclass M(torch.nn.Module):\n    def forward(self, feats):\n"
                      "        return feats * 2\n\ndef make():\n    return M()\n")
    np.savez(tmp_path / "d.npz", features=np.zeros((40, 3), np.float32))
    code, _, err = run("build", f"{models}:make", "--data", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert code == 2 and "the data has arrays features but the model's inputs are feats" in err
    assert "pass --data" not in err


def test_float_ids_are_a_dtype_error(tmp_path):
    models = tmp_path / "m.py"
    models.write_text("import torch\nclass M(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                      "        self.e = torch.nn.Embedding(10, 4)\n    def forward(self, ids):\n"
                      "        return self.e(ids).sum(1)\n\ndef make():\n    return M()\n")
    np.savez(tmp_path / "d.npz", ids=np.ones((40, 5), np.float32))
    code, _, err = run("build", f"{models}:make", "--data", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert code == 2 and "input ids is float32 in the data" in err and "int64" in err


def test_output_task_flag_is_checked(tmp_path):
    code, _, err = run("build", "--output-task", "prob=probablity", "--out", tmp_path)
    assert code == 2 and "--output-task prob" in err and "not one of" in err
    code, _, err = run("build", "--output-task", "nosuch=regression", "--out", tmp_path, "--profile", "server",
                       "--prune-method", "none")
    assert code == 2 and "output task for nosuch: the model has no such output" in err


def test_output_names_that_collide_with_exporter_nodes_survive(tmp_path):
    import onnx
    import torch

    from edgekit.export.onnx import export_onnx
    from edgekit.sources.load import torch_model

    class Net(torch.nn.Module):
        output_names = ["linear", "relu"]  # torch.export names its own nodes this way

        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            y = self.linear(x)
            return y, torch.relu(y)

    model = torch_model(Net().eval(), name="net", loader="factory", origin="net", sample_inputs={"x": np.zeros((2, 4), np.float32)})
    info = export_onnx(model, tmp_path / "n.onnx")
    graph = onnx.load(str(tmp_path / "n.onnx")).graph
    assert [o.name for o in graph.output] == ["linear", "relu"] and info["exporter"] == "torch.onnx (torch.export)"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch stays dynamic
    import onnxruntime as ort
    out = ort.InferenceSession(str(tmp_path / "n.onnx")).run(None, {"x": np.ones((3, 4), np.float32)})
    with torch.no_grad():
        want = Net.forward(model.module, torch.ones(3, 4))
    assert np.allclose(out[0], want[0].numpy(), atol=1e-6) and np.allclose(out[1], want[1].numpy(), atol=1e-6)


def test_profile_outputs_table(tmp_path):
    from edgekit.targets.profiles import load_profile

    good = tmp_path / "p.toml"
    good.write_text('name = "p"\nextends = "mobile"\n[outputs]\nprob = "probability:0.6"\n')
    assert load_profile(good).outputs == {"prob": "probability:0.6"}
    bad = tmp_path / "b.toml"
    bad.write_text('name = "b"\nextends = "mobile"\n[outputs]\nprob = "likelihood"\n')
    with pytest.raises(UsageError, match="outputs.prob: output task 'likelihood' is not one of"):
        load_profile(bad)


FRAGILE_VIEW = '''import torch
from torch import nn


class Heads(nn.Module):
    """The hidden layer's output is split into 4 heads of 8 by a hard-coded view: any channel cut breaks it."""
    def __init__(self):
        super().__init__()
        self.hidden, self.mix, self.out = nn.Linear(6, 32), nn.Linear(8, 8), nn.Linear(32, 3)

    def forward(self, x):
        h = torch.relu(self.hidden(x)).view(-1, 4, 8)
        return self.out(torch.relu(self.mix(h)).reshape(-1, 32))


def make():
    torch.manual_seed(0)
    return Heads().eval()
'''


@pytest.mark.slow
def test_pruning_attempts_that_break_the_model_are_recorded_and_the_build_goes_on(tmp_path):
    (tmp_path / "heads.py").write_text(FRAGILE_VIEW)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((200, 6)).astype(np.float32))
    prof = tmp_path / "p.toml"
    prof.write_text('name = "p"\nextends = "server"\n[target]\nformats = ["onnx"]\n[prune]\nround_to = 1\ntime_box_s = 30.0\n'
                    '[recover]\nepochs = 1\n'
                    '[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 1.0\n')
    code, _, err = run("build", f"{tmp_path / 'heads.py'}:make", "--data", tmp_path / "d.npz", "--profile", prof,
                       "--out", tmp_path / "out")
    assert code in (0, 1), err
    report = json.loads((tmp_path / "out" / "heads-make-p" / "report.json").read_text())
    attempts = report["compression"]["attempts"]
    broken = [a for a in attempts if a.get("error")]
    assert broken and all(a["verdict"] == "failed" and "Error: " in a["error"] for a in broken)
    assert len(attempts) > len(broken) or not report["compression"]["applied"]
    assert report["artifacts"] and all(a["validation"] for a in report["artifacts"])


NOISY_THEN_FIXED = '''import torch
from torch import nn


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return self.lin(x){noise}


def make():
    torch.manual_seed(0)
    return M().eval()
'''


@pytest.mark.slow
def test_a_later_success_removes_the_earlier_failure_log(tmp_path, fast_profile):
    models = tmp_path / "m.py"
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32))
    models.write_text(NOISY_THEN_FIXED.format(noise=" + torch.rand_like(self.lin(x))"))
    code, _, err = run("build", f"{models}:make", "--data", tmp_path / "d.npz", "--profile", fast_profile,
                       "--out", tmp_path / "out", "--formats", "onnx")
    assert code == 3, err
    assert (tmp_path / "out" / "m-make-fast.failed.log").is_file()
    models.write_text(NOISY_THEN_FIXED.format(noise=""))
    code, _, err = run("build", f"{models}:make", "--data", tmp_path / "d.npz", "--profile", fast_profile,
                       "--out", tmp_path / "out", "--formats", "onnx")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m-make-fast"]
