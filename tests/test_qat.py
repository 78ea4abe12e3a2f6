"""Quantization-aware training: the fake-quant grid is the exporters' grid, and QAT rescues a 4-bit build
whose PTQ files miss a tight budget, keeping every layer at 4 bits."""
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import edgekit
from edgekit.core.errors import UsageError

DATA = Path(__file__).parent / "data"


def _digits_8px(folder: Path):
    d = np.load(folder / "digits.npz")
    return d["x_train"], d["x"], d["y_train"], d["y"]


def _load(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgekit_test_small_cnn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory) -> Path:
    """A user's folder: model.py (a 2.9k-parameter CNN factory), its trained weights and the digits data."""
    folder = tmp_path_factory.mktemp("small-cnn")
    assert _load(DATA / "small_cnn.py").write_user_folder(folder) > 0.95
    (folder / "tight.toml").write_text('name = "iot-tight"\nextends = "iot"\n[prune]\nmethod = "none"\n'
                                       '[budget]\nmax_accuracy_drop = 0.01\n'
                                       '[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 2.0\n'
                                       '[qat]\nepochs = 15\n')  # a 2.9k-parameter net: 15 epochs take ~1 s
    return folder


@pytest.mark.slow
def test_qat_weights_round_to_the_same_integers_in_onnx_and_tflite(small_cnn, tmp_path):
    """After training on each target's grid, the exported int4 and int8 files hold exactly the integers torch
    saw: ONNX Runtime's QDQ files, ai-edge-quantizer's int4 file and the TFLite converter's full-integer file."""
    import torch

    from edgekit.core.data import Split
    from edgekit.export.job import ExportJob
    from edgekit.export.onnx import export_onnx
    from edgekit.export.tf_client import TfWorker
    from edgekit.export.tflite import export_tflite_onnx2tf
    from edgekit.files.onnx_io import initializer_integers
    from edgekit.quantize import qat_grid as qat
    from edgekit.quantize.onnx_ort import QuantPlan, preprocess, quantize_onnx
    from edgekit.quantize.passes import calibration_npz
    from edgekit.quantize.tflite_int4_recipe import write_int4
    from edgekit.sources.load import load_model
    from edgekit.files.tflite_info import integer_weights

    source = load_model(f"{small_cnn / 'model.py'}:make_model", weights=small_cnn / "model.pt")
    x_tr, x_te, y_tr, _ = _digits_8px(small_cnn)
    calib = Split({"x": x_te[:64]})
    with TfWorker(io.StringIO()) as tf:
        for target, bits in (("onnx", 4), ("tflite", 4), ("onnx", 8), ("tflite", 8)):
            g = qat.grid(target, bits)
            student, layers = qat.prepare(source.module, g)
            assert layers == ["features.0", "features.3", "features.6", "head"]  # the BatchNorms were folded in
            opt = torch.optim.SGD(student.parameters(), lr=0.05)
            for i in range(0, 512, 64):  # a few real steps, so the weights are off the PTQ grid
                loss = torch.nn.functional.cross_entropy(student(torch.from_numpy(x_tr[i:i + 64])),
                                                         torch.from_numpy(y_tr[i:i + 64]))
                opt.zero_grad()
                loss.backward()
                opt.step()
            student = qat.finish(student)
            want = {n: qat.integers(m.weight, g).numpy() for n, m in student.named_modules() if n in layers}
            model = replace(source, module=student, onnx_path=None, meta={})
            folder = tmp_path / f"{target}{bits}"
            folder.mkdir()
            export_onnx(model, folder / "qat.onnx")
            if target == "onnx":
                quantize_onnx(preprocess(folder / "qat.onnx", folder / "pre.onnx"), folder / "q.onnx", calib,
                              QuantPlan(bits))
                got = initializer_integers(folder / "q.onnx")
                for name, ints in want.items():
                    stored = got[f"{name}.weight_quantized"]
                    assert stored.min() >= g.qmin and stored.max() <= g.qmax
                    assert np.array_equal(stored.astype(np.int32).reshape(ints.shape), ints), name
            else:
                job = ExportJob(model, folder, folder, io.StringIO(), tf, reference_onnx=folder / "qat.onnx",
                                calibration=calib)
                fp32 = export_tflite_onnx2tf(job)[0]
                if bits == 4:
                    write_int4(tf, fp32.path, folder / "q.tflite")
                else:  # the TFLite converter's full-integer file, from the SavedModel, as the int8 pass makes it
                    npz = calibration_npz(calib, fp32.mapping, folder / "calib.npz")
                    tf.call("convert", "qat int8", saved_model=str(fp32.saved_model), precision="int8",
                            out=str(folder / "q.tflite"), calibration=str(npz), int8_io=False)
                got = list(integer_weights(folder / "q.tflite").values())
                assert len(got) == len(want)
                for ints in want.values():  # TFLite stores conv weights OHWI: compare each in torch's OIHW
                    match = [q for q in got if q.size == ints.size and np.array_equal(
                        (q.transpose(0, 3, 1, 2) if q.ndim == 4 else q), ints)]
                    assert match, f"no int{bits} tensor in the .tflite holds the integers of a {ints.shape} weight"
                    assert np.abs(ints).max() == g.qmax  # the scale rule: max |w| / 7 (int4), / 127 (int8)


@pytest.mark.slow
def test_qat_rescues_a_tight_4_bit_build_keeping_every_layer_at_4_bits(small_cnn, tmp_path):
    result = edgekit.build(f"{small_cnn / 'model.py'}:make_model", weights=small_cnn / "model.pt",
                           data=small_cnn / "digits.npz", profile=small_cnn / "tight.toml", out=tmp_path,
                           formats=("onnx", "tflite"))
    report = json.loads((result.bundle / "report.json").read_text())
    files = {a["file"]: a for a in report["artifacts"]}
    for name in ("model_int4.onnx", "model_int4.tflite"):
        a = files[name]
        q = a["export"]["qat"]
        assert q["drop_before"] > 0.01, "PTQ alone met the budget: this build does not exercise QAT"
        assert q["shipped"] and q["drop_after"] == pytest.approx(a["validation"]["drop"], abs=1e-9)
        assert a["validation"]["drop"] <= 0.01  # measured in the file's own runtime on held-out digits
        assert set(a["precision_map"].values()) == {"int4"}, a["precision_map"]  # nothing moved to int8 or float
        scores = q["epoch_scores"]  # the kept weights are the best-scoring epoch's, on samples validation never sees
        assert len(scores) == 15 and scores[q["kept_epoch"] - 1] == max(scores) and max(scores) > 0.9
        assert q["scored_by"] == "top-1 on the 135 calibration samples"
        assert q["epochs_run"] == 15 and q["samples"] == len(_digits_8px(small_cnn)[0]) and q["labels_used"]
        assert any(n.startswith("QAT at int4: drop") and "meets the budget" in n for n in a["export"]["notes"])
    assert files["model_int4.onnx"]["export"]["qat"]["activations"].startswith("4 layer inputs fake-quantized")
    assert files["model_int4.tflite"]["export"]["qat"]["activations"].startswith("float")
    md = (result.bundle / "report.md").read_text()
    assert "QAT at int4: drop" in md


@pytest.mark.slow
def test_qat_trains_the_full_integer_int8_tflite_file_and_ships_the_better(small_cnn, tmp_path):
    """qat.mode = "always" on an 8-bit build: the converter's int8 file is trained (weights on its grid, layer
    inputs at 8 bits) and the file that ships is the one with the lower drop measured in LiteRT."""
    profile = tmp_path / "m8.toml"
    profile.write_text('name = "m8"\nextends = "mobile"\n[prune]\nmethod = "none"\n[budget]\n'
                       'max_accuracy_drop = 0.015\n[bench]\nwarmup = 2\nruns = 20\nbatch = 4\nmax_seconds = 2.0\n'
                       '[qat]\nepochs = 15\nmode = "always"\n')
    result = edgekit.build(f"{small_cnn / 'model.py'}:make_model", weights=small_cnn / "model.pt",
                           data=small_cnn / "digits.npz", profile=profile, out=tmp_path / "out", formats=("tflite",))
    report = json.loads((result.bundle / "report.json").read_text())
    a = next(a for a in report["artifacts"] if a["file"] == "model_int8.tflite")
    q = a["export"]["qat"]
    assert q["grid"] == "tf.lite.TFLiteConverter int8 per-channel symmetric" and q["bits"] == 8
    assert q["activations"].startswith("4 layer inputs fake-quantized to 8 bits")
    assert q["drop_after"] is not None and q["drop_after"] < q["drop_before"] and q["shipped"]  # the QAT file ships
    assert a["validation"]["drop"] == pytest.approx(min(q["drop_before"], q["drop_after"]), abs=1e-9)
    assert a["validation"]["drop"] <= 0.015 and set(a["precision_map"].values()) == {"int8"}
    assert any(n.startswith("QAT at int8") for n in a["export"]["notes"])
    assert "QAT at int8" in (result.bundle / "report.md").read_text()


def test_qat_skip_and_verdict_lines():
    from edgekit.targets.profiles import load_profile
    from edgekit.quantize.qat import QatRun, train, verdict

    prof = load_profile("iot")
    torch_model = SimpleNamespace(kind="torch", module=object(), meta={})
    no_train = SimpleNamespace(model=torch_model, data=SimpleNamespace(train=None), profile=prof)
    assert train(no_train, "onnx", 4).skipped.startswith("QAT skipped: no samples to train on")
    onnx_source = SimpleNamespace(model=SimpleNamespace(kind="onnx", module=None), data=None, profile=prof)
    assert "needs a torch graph" in train(onnx_source, "tflite", 4).skipped
    run = QatRun(object(), {"epochs_run": 2, "epochs": 3, "seconds": 4.0, "samples": 100, "labels_used": False,
                            "stopped": "at its 4 s time box"})
    assert verdict(run, 0.02, 0.03, 0.01, "int4") == ("QAT at int4 did not help (drop 0.0300 vs PTQ 0.0200; 2 epoch(s) "
                                                      "of 3, 4.0 s, 100 samples (at its 4 s time box)): the PTQ file ships")
    assert verdict(run, 0.02, 0.015, 0.01, "int8").startswith("QAT at int8: drop 0.0200 -> 0.0150, still misses")
    kept = QatRun(object(), {**run.details, "kept_epoch": 1, "scored_by": "top-1 on the 135 calibration samples"})
    assert verdict(kept, 0.02, 0.005, 0.01, "int4").endswith(
        "4.0 s, 100 samples (at its 4 s time box), kept epoch 1 (best top-1 on the 135 calibration samples))")


def test_a_failing_training_is_a_skipped_qat_not_a_failed_file():
    import torch

    from edgekit.core.data import Split
    from edgekit.targets.profiles import load_profile
    from edgekit.quantize.qat import train

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            if self.training:
                raise RuntimeError("an op without a gradient")
            return self.fc(x)

    split = Split({"x": np.ones((8, 4), np.float32)}, np.zeros(8, np.int64))
    model = SimpleNamespace(kind="torch", module=Broken().eval(), meta={}, iospec=SimpleNamespace(input_names=["x"]))
    log = io.StringIO()
    ctx = SimpleNamespace(model=model, teacher=None, log=log, profile=load_profile("iot"),
                          data=SimpleNamespace(train=split, calibration=split, task="classification",
                                               train_kind="given"))
    run = train(ctx, "onnx", 4)
    assert run.model is None and run.skipped.startswith("QAT skipped: its training failed (RuntimeError: an op without")
    assert "training failed" in log.getvalue()


def test_distill_keeps_the_best_scoring_epoch():
    """A score that falls after the first epoch: the first epoch's weights come back, not the last ones."""
    import torch

    from edgekit.core.data import Split
    from edgekit.prune.recover import distill

    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    split = Split({"x": np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)})
    seen = []

    def score():
        seen.append({k: v.clone() for k, v in student.state_dict().items()})
        return -len(seen)  # 1st epoch best

    cfg = SimpleNamespace(epochs=3, lr=1e-2, batch_size=16, distill_temperature=2.0, distill_alpha=1.0)
    fit = distill(student, teacher, split, ["x"], "generic", cfg, score=score)
    assert fit["kept_epoch"] == 1 and fit["scores"] == [-1.0, -2.0, -3.0]
    assert not torch.equal(seen[0]["weight"], seen[2]["weight"])  # the training moved the weights
    for k, v in student.state_dict().items():
        assert torch.equal(v, seen[0][k]), k


def test_qat_always_is_refused_up_front_for_onnx_sources(tmp_path):
    from edgekit.pipeline.plan import make_plan
    from edgekit.targets.profiles import load_profile, with_overrides

    prof = with_overrides(load_profile("iot"), {"qat.mode": "always"})
    source = SimpleNamespace(kind="onnx", origin="model.onnx")
    with pytest.raises(UsageError, match="model.onnx: qat.mode = \"always\" needs a torch graph"):
        make_plan(source, prof, ("onnx",), explicit=True)
    with pytest.raises(UsageError, match="qat.mode must be one of on-miss, always, off, got .sometimes."):
        with_overrides(load_profile("iot"), {"qat.mode": "sometimes"})


def _relu_onnx(path: Path, batch) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 64])
    w = helper.make_tensor("w", TensorProto.FLOAT, [64, 64], np.eye(64, dtype=np.float32).ravel().tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                              "g", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bench_by_batch_rows_and_json(tmp_path):
    from click.testing import CliRunner

    from edgekit.cli.main import main

    dynamic, fixed = _relu_onnx(tmp_path / "dyn.onnx", "batch"), _relu_onnx(tmp_path / "one.onnx", 1)
    out = CliRunner().invoke(main, ["bench", str(dynamic), "--batch", "1,8,32", "--runs", "20", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)["by_batch"]
    assert [r["batch"] for r in rows] == [1, 8, 32] and {r["mode"] for r in rows} == {"batched"}
    assert all(r["runs"] >= 10 and 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in rows)
    for r in rows:  # samples/s = batch / mean request time, and the mean is at least half the median
        assert 0 < r["samples_per_s"] <= 2 * r["batch"] * 1000 / r["p50_ms"]
    out = CliRunner().invoke(main, ["bench", str(fixed), "--batch", "1,8", "--runs", "20"])
    assert out.exit_code == 0, out.output
    assert "throughput by batch size" in out.output and "sequential (fixed batch of 1)" in out.output
    out = CliRunner().invoke(main, ["bench", str(dynamic), "--batch", "8,0"])
    assert out.exit_code == 2 and "give batch sizes >= 1" in out.output


def test_pruning_picture_rows_for_structured_and_unstructured(tmp_path):
    from edgekit.report.pruning import pruning_rows, write_pruning_plot

    structured = {"applied": True, "details": {"structured": {"layers": {
        "conv1": {"before": [32, 3, 3, 3], "after": [16, 3, 3, 3]}, "conv2": {"before": [64, 32, 3, 3],
                                                                           "after": [48, 16, 3, 3]}}}}}
    assert pruning_rows(structured) == ("structured", [("conv1", 32.0, 16.0), ("conv2", 64.0, 48.0)])
    line = write_pruning_plot(tmp_path / "p.png", structured)
    assert line.startswith("structured pruning: channels kept per layer (67% of") and (tmp_path / "p.png").stat().st_size > 5000
    sparse = {"applied": True, "details": {"unstructured": {"per_layer": {"fc": {"weights": 100, "sparsity": 0.5},
                                                                         "out": {"weights": 300, "sparsity": 0.9}}}}}
    assert write_pruning_plot(tmp_path / "u.png", sparse).startswith(
        "unstructured pruning: sparsity per layer (80% of")
    assert write_pruning_plot(tmp_path / "n.png", {"applied": False}) is None
    assert not (tmp_path / "n.png").exists()
