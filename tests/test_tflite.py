"""TFLite export (onnx2tf, offline), Keras sources, LiteRT/TFLite-Micro validation and the C array."""
import io
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import edgekit
from edgekit.core.data import prepare
from edgekit.core.errors import UsageError
from edgekit.export import EXPORTERS, ExportJob, PassContext
from edgekit.export.tf_client import TfWorker
from edgekit.export.tflite import export_tflite_onnx2tf, map_to_source
from edgekit.quantize.passes import tflite_converted
from edgekit.targets.formats import format_table
from edgekit.targets.profiles import load_profile
from edgekit.runtimes.litert import LiteRTRunner
from edgekit.runtimes.ort import OrtRunner
from edgekit.sources.load import load_model
from edgekit.files.tflite_info import read_tflite

pytestmark = pytest.mark.slow


BLOCK = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network access blocked by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
"""


@pytest.fixture()
def no_network(monkeypatch, tmp_path):
    """Sockets refuse to connect, in this process and in every Python process it starts (the converter
    worker): a sitecustomize on PYTHONPATH installs the same block there."""
    def refuse(*args, **kwargs):
        raise OSError("network access blocked by the test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    site = tmp_path / "netblock"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    child = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                           capture_output=True, text=True)
    assert "network access blocked by the test" in child.stderr  # the block holds in child processes


def tflite_fp32(model, tmp_path, reference_onnx, calibration=None):
    """The fp32 .tflite of ``model`` through the exporter (onnx2tf in the converter worker)."""
    with TfWorker() as tf:
        job = ExportJob(model, tmp_path, tmp_path, io.StringIO(), tf, reference_onnx=reference_onnx,
                        calibration=calibration)
        (out,) = export_tflite_onnx2tf(job)
    return out


def test_a_prestarted_converter_worker_imports_before_its_first_call(tmp_path):
    torch.manual_seed(0)
    src = tmp_path / "lin.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Linear(4, 3)).eval(), (torch.zeros(1, 4),), str(src),
                      input_names=["x"], output_names=["y"], dynamo=False)
    model = load_model(str(src))
    log = io.StringIO()
    with TfWorker(log) as tf:
        tf.prestart()
        first = tf._proc.pid
        tf.prestart()  # already running: the same worker
        tf.settle()
        assert tf._proc.pid == first and tf._proc.poll() is None  # imported, waiting for work
        (out,) = export_tflite_onnx2tf(ExportJob(model, tmp_path, tmp_path, log, tf, reference_onnx=src))
        assert tf._proc.pid == first and out.path.stat().st_size > 0  # the call went to the prestarted worker
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    got = LiteRTRunner(out.path, mapping=out.mapping).run({"x": x})["y"]
    np.testing.assert_allclose(got, OrtRunner(src).run({"x": x})["y"], rtol=1e-4, atol=1e-5)


class RGBNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def _static_rgb_onnx(tmp_path):
    path = tmp_path / "rgb.onnx"  # batch fixed at 1, 3 channels: the shape onnx2tf downloads images for
    torch.onnx.export(RGBNet().eval(), (torch.zeros(1, 3, 16, 16),), str(path), input_names=["pixels"],
                      output_names=["scores"], dynamo=False)
    return path


def test_onnx2tf_alone_would_go_online(tmp_path, no_network):
    import onnx2tf
    with pytest.raises(Exception) as err:  # noqa: B017 - requests wraps the socket error in its own type
        onnx2tf.convert(input_onnx_file_path=str(_static_rgb_onnx(tmp_path)), output_folder_path=str(tmp_path / "o"),
                        not_use_onnxsim=True, non_verbose=True)
    assert "network access blocked by the test" in repr(err.value)  # it failed reaching for the network


def test_offline_conversion_of_3_channel_static_batch(tmp_path, no_network):
    src = _static_rgb_onnx(tmp_path)
    model = load_model(str(src))
    assert model.iospec.inputs[0].shape == (1, 3, 16, 16)
    rng = np.random.default_rng(0)
    data = prepare({"x": rng.standard_normal((40, 3, 16, 16)).astype(np.float32)}, model.iospec, source="t")
    out = tflite_fp32(model, tmp_path, src, data.calibration)
    x = data.validation.inputs["pixels"][:1]
    want = OrtRunner(src).run({"pixels": x})["scores"]
    got = LiteRTRunner(out.path, mapping=out.mapping).run({"pixels": x})["scores"]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)
    pixels = out.mapping.inputs[0]
    assert pixels.shape == (1, 16, 16, 3) and pixels.layout == "NHWC" and pixels.source_perm == (0, 2, 3, 1)


def test_layout_mapping_is_recorded(user_models, tmp_path):
    model = load_model(f"{user_models}:make_tiny")
    from edgekit.export.onnx import export_onnx
    export_onnx(model, tmp_path / "t.onnx")
    with TfWorker() as tf:
        job = ExportJob(model, tmp_path, tmp_path, io.StringIO(), tf, reference_onnx=tmp_path / "t.onnx")
        (fp32,) = export_tflite_onnx2tf(job)
        ctx = PassContext(tmp_path, tmp_path, "t", model.iospec, io.StringIO(), tf, None, None, load_profile("iot"))
        fp16 = tflite_converted("fp16")(fp32, ctx)  # a pass on the exporter's SavedModel: no second conversion
    assert fp16.path.name == "t_fp16.tflite" and fp16.saved_model == fp32.saved_model
    spec = map_to_source(fp32.path, model.iospec)
    assert spec.inputs[0].shape == ("batch", 8, 8, 1) and spec.inputs[0].source_perm == (0, 2, 3, 1)
    assert spec.outputs[0].source_name == "output" and spec.outputs[0].source_perm is None
    from edgekit.files.tflite_info import read_tflite
    assert set(read_tflite(fp16.path).precision_map.values()) == {"fp16"}
    assert set(read_tflite(fp32.path).precision_map.values()) == {"fp32"}


def test_format_table_and_exporters_match():
    table = format_table()
    assert set(table) == {fmt for fmt, _ in EXPORTERS}
    assert table["tflite"].runtime == "litert" and table["tflite"].precisions == ("fp32", "fp16", "int8", "int16x8", "int4")
    assert table["c_array"].runtime == "tflm"


@pytest.mark.parametrize("profile", ["mobile", "iot"])
def test_example_tflite_files_pass_on_litert(profile, tmp_path, request):
    # unpruned (pruning: test_e2e, test_prune); mobile's build is the session's shared one (1 thread)
    result = (request.getfixturevalue("mobile_unpruned") if profile == "mobile" else
              edgekit.build(profile=profile, out=tmp_path, prune_method="none"))
    assert result.passed, [g.describe() for g in result.failed_gates]
    bundle = result.bundle
    by_file = {a.file: a for a in result.artifacts}
    assert {"digits_cnn.onnx", "digits_cnn.tflite", "digits_cnn_int8.tflite"} <= set(by_file)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["file"] == "digits_cnn.tflite")
    assert entry["runtime"] == "litert" and entry["iospec"]["inputs"][0]["layout"] == "NHWC"
    assert entry["iospec"]["inputs"][0]["source_perm"] == [0, 2, 3, 1]
    # run both files by hand on held-out digits: the .tflite agrees with the ONNX reference
    from edgekit.examples import digits
    x = digits.load_arrays()["x"]
    onnx_top1 = OrtRunner(bundle / "digits_cnn.onnx").run({"image": x})["logits"].argmax(1)
    for name in ("digits_cnn.tflite", "digits_cnn_int8.tflite"):
        raw = LiteRTRunner(bundle / name)  # the file's own tensors: NHWC input, its own names
        (out,) = raw.run({raw.file_spec.inputs[0].name: x.transpose(0, 2, 3, 1)}).values()
        assert (out.argmax(1) == onnx_top1).mean() >= 0.99, name
        assert by_file[name].validation.metrics["top1_agreement"] >= 0.99
        assert by_file[name].bench.p50_ms > 0 and by_file[name].bench.runtime == "litert"
    if profile == "iot":
        # 4 bits: LiteRT gets int4 weights where ai-edge-quantizer covers the op, and the map says which
        q4 = by_file["digits_cnn_int4.tflite"]
        pmap = read_tflite(bundle / q4.file).precision_map
        assert q4.precision_map == pmap and set(pmap.values()) == {"int4", "fp32"}
        assert sum(p == "int4" for p in pmap.values()) == 17  # 16 convs + the classifier
        assert all(p == "fp32" for w, p in pmap.items() if "depthwise" in w)
        assert q4.validation.drop <= 0.02 and q4.bytes < 0.75 * by_file["digits_cnn_int8.tflite"].bytes
        assert q4.bytes < 0.35 * by_file["digits_cnn.tflite"].bytes
        c = by_file["digits_cnn_model_data.cc"]
        tflm = c.export.to_dict()["tflm"]
        assert tflm["loads"] and 10_000 < tflm["arena_bytes"] < 512 * 1024
        assert c.precision == "int8" and c.export.to_dict()["embeds"] == "digits_cnn_int8.tflite"
        gates = {(g.name, g.file): g for g in result.gates}
        assert gates[("ram", c.file)].passed and gates[("ram", c.file)].value == tflm["arena_bytes"] / 1024
        assert gates[("tflm_ops", c.file)].passed
        assert c.validation.metrics["top1_agreement"] >= 0.99
        _compile_and_compare(bundle, tmp_path)


def _compile_and_compare(bundle, tmp_path):
    """The C array compiles (C++ for the array, C for the header) and holds exactly the .tflite bytes."""
    gxx, gcc = shutil.which("g++"), shutil.which("gcc")
    assert gxx and gcc, "the C array test needs gcc and g++"
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\n#include <stdint.h>\n#include "digits_cnn_model_data.h"\n'
        "int main(void) {\n"
        "  if (((uintptr_t)g_digits_cnn_model_data) % 16) return 2;\n"
        "  fwrite(g_digits_cnn_model_data, 1, g_digits_cnn_model_data_len, stdout);\n  return 0;\n}\n")
    subprocess.run([gxx, "-std=c++11", "-c", str(bundle / "digits_cnn_model_data.cc"), "-I", str(bundle),
                    "-o", str(tmp_path / "data.o")], check=True)
    subprocess.run([gcc, "-c", str(tmp_path / "main.c"), "-I", str(bundle), "-o", str(tmp_path / "main.o")], check=True)
    subprocess.run([gxx, str(tmp_path / "main.o"), str(tmp_path / "data.o"), "-o", str(tmp_path / "dump")], check=True)
    dumped = subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True).stdout
    assert dumped == (bundle / "digits_cnn_int8.tflite").read_bytes()


def _keras_model(path):
    import keras
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(4, name="probs")(x)
    keras.Model(inp, out).save(path)
    return path


def test_int8_tflite_calibrates_integer_id_inputs(user_models, fast_profile, tmp_path):
    """A recommender with two int64 id inputs: the representative dataset keeps the ids integers (the
    converter refused float ids), and the full-integer file still tracks the source model."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "ids.npz", user_id=rng.integers(0, 100, 200), item_id=rng.integers(0, 200, 200))
    result = edgekit.build(f"{user_models}:make_recommender", data=tmp_path / "ids.npz", profile=fast_profile,
                           out=tmp_path, formats=("onnx", "tflite"))
    by_file = {a.file: a for a in result.artifacts}
    q = by_file["my_models_int8.tflite"]
    ids = [t for t in q.iospec["inputs"] if (t.get("source_name") or t["name"]) in ("user_id", "item_id")]
    assert len(ids) == 2 and all(t["dtype"].startswith("int") for t in ids)
    assert q.validation.metrics["cosine"] > 0.95 and q.validation.drop < 0.05


def test_keras_source_goes_to_tflite_and_onnx(tmp_path, fast_profile):
    src = _keras_model(tmp_path / "small.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", img=rng.standard_normal((60, 12, 12, 3)).astype(np.float32), y=rng.integers(0, 4, 60))
    result = edgekit.build(str(src), data=tmp_path / "d.npz", profile=fast_profile, out=tmp_path / "out")
    by_file = {a.file: a for a in result.artifacts}
    assert {"small.onnx", "small_int4.onnx", "small.tflite", "small_int8.tflite"} <= set(by_file)
    assert "tf2onnx" in by_file["small.onnx"].export.to_dict()["exporter"]
    assert "TFLiteConverter" in by_file["small.tflite"].export.to_dict()["exporter"]
    for a in by_file.values():
        floor = 1.0 if a.precision == "fp32" else 0.9
        assert a.validation.metrics["top1_agreement"] >= floor, a.file
    assert by_file["small.tflite"].iospec["inputs"][0]["shape"] == ["batch", 12, 12, 3]
    assert by_file["small.tflite"].iospec["inputs"][0].get("source_perm") is None  # Keras is NHWC already



def test_keras_unsupported_op_names_it(tmp_path):
    import tensorflow as tf

    class Odd(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.math.bessel_i1e(x)}
    module = Odd()
    tf.saved_model.save(module, str(tmp_path / "odd"), signatures=module.__call__.get_concrete_function())
    np.savez(tmp_path / "d.npz", x=np.ones((20, 4), np.float32))
    from click.testing import CliRunner
    from edgekit.cli.main import main
    r = CliRunner().invoke(main, ["build", str(tmp_path / "odd"), "--data", str(tmp_path / "d.npz"),
                                  "--out", str(tmp_path / "out"), "--formats", "tflite"])
    assert r.exit_code == 2, r.stderr
    assert "TFLite does not support: BesselI1e" in r.stderr and "Traceback" not in r.stderr


def test_corrupt_keras_and_tflite(tmp_path):
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UsageError, match="bad.keras is not a loadable Keras model"):
        load_model(str(tmp_path / "bad.keras"))
    (tmp_path / "bad.tflite").write_bytes(b"\x00" * 64)
    from click.testing import CliRunner
    from edgekit.cli.main import main
    for cmd in ("bench", "inspect"):
        r = CliRunner().invoke(main, [cmd, str(tmp_path / "bad.tflite")])
        assert r.exit_code == 2 and "bad.tflite" in r.stderr and "Traceback" not in r.stderr, (cmd, r.stderr)


def test_missing_tensorflow_is_a_usage_error(user_models, tiny_data, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    from click.testing import CliRunner
    from edgekit.cli.main import main
    r = CliRunner().invoke(main, ["build", f"{user_models}:make_tiny", "--data", str(tiny_data), "--out",
                                  str(tmp_path), "--formats", "onnx,tflite"])
    assert r.exit_code == 2 and "tensorflow is not installed): pip install 'edgekit[tflite]'" in r.stderr
    assert not (tmp_path / "my_models-make_tiny-iot").exists()


def test_inspect_tflite_and_onnx(tmp_path, user_models):
    from click.testing import CliRunner
    from edgekit.cli.main import main
    from edgekit.export.onnx import export_onnx
    model = load_model(f"{user_models}:make_tiny")
    export_onnx(model, tmp_path / "t.onnx")
    fp32 = tflite_fp32(model, tmp_path, tmp_path / "t.onnx")
    for path, op, params in ((tmp_path / "t.onnx", "Conv", 8 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 3 + 3),
                             (fp32.path, "CONV_2D", None)):
        r = CliRunner().invoke(main, ["inspect", str(path), "--json"])
        info = json.loads(r.stdout)
        assert info["ops"][op] == 2 and info["bytes"] == path.stat().st_size
        if params:
            assert info["params"] == params


def _int4_tflite_build(user_models, tmp_path, factory: str, x: np.ndarray):
    """iot at 4 bits, TFLite only, on a 3-layer MLP labelled by its own predictions; returns the
    result, the int4 file's artifact and the name of fc1 (TF's first matmul) in the .tflite."""
    import re
    model = load_model(f"{user_models}:{factory}", sample_inputs={"x": x})
    np.savez(tmp_path / "d.npz", x=x, y=model.module(torch.from_numpy(x)).argmax(1).numpy())
    prof = tmp_path / "p.toml"
    prof.write_text('name = "p"\nextends = "iot"\n[prune]\nmethod = "none"\n[budget]\nmax_accuracy_drop = 0.02\n'
                    '[bench]\nwarmup = 5\nruns = 30\nbatch = 8\n')
    result = edgekit.build(f"{user_models}:{factory}", data=tmp_path / "d.npz", profile=prof,
                           out=tmp_path, formats=("tflite",), bits=4)
    q4 = next(a for a in result.artifacts if a.file.endswith("_int4.tflite"))
    fc1 = min(q4.precision_map, key=lambda n: int(re.search(r"matmul(?:_(\d+))?/", n).group(1) or 0))
    return result, q4, fc1


@pytest.mark.slow
def test_int4_tflite_repair_moves_the_worst_layer_to_int8(user_models, tmp_path):
    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    result, q4, fc1 = _int4_tflite_build(user_models, tmp_path, "make_spiky", x)
    attempts = q4.export.to_dict()["attempts"]
    assert attempts[0]["drop"] > 0.05  # int4 everywhere loses too much
    ranked = q4.export.to_dict()["sensitivity"]  # measured in LiteRT with only that layer at int4: fc1 is the worst
    assert ranked[0]["layer"] == fc1 and ranked[0]["drop_alone"] > 0.1 > ranked[-1]["drop_alone"]
    assert attempts[1]["label"] == f"repair: {fc1} -> int8" and attempts[1]["drop"] < attempts[0]["drop"]
    assert q4.validation.drop <= 0.02 and q4.export.to_dict()["int8_layers"]  # repaired, and the shipped file passes
    assert q4.export.to_dict()["float_layers"] == []
    pmap = read_tflite(result.bundle / q4.file).precision_map
    assert sorted(p for p in pmap.values()) == sorted(["int8"] * len(q4.export.to_dict()["int8_layers"]) +
                                                      ["int4"] * (3 - len(q4.export.to_dict()["int8_layers"])))


@pytest.mark.slow
def test_int4_tflite_repair_moves_a_layer_to_float_when_int8_is_not_enough(user_models, tmp_path):
    x = np.random.default_rng(0).standard_normal((400, 16)).astype(np.float32)
    x[:, 0] *= 1000  # the feature fc1's tiny weights read
    result, q4, fc1 = _int4_tflite_build(user_models, tmp_path, "make_fragile", x)
    assert q4.export.to_dict()["sensitivity"][0]["layer"] == fc1
    by_name = {a["label"]: a["drop"] for a in q4.export.to_dict()["attempts"]}
    assert by_name[f"repair: {fc1} -> int8"] > 0.1  # int8 weights still lose fc1's small weights
    assert q4.export.to_dict()["float_layers"] == [fc1] and fc1 not in q4.export.to_dict()["int8_layers"]
    assert q4.export.to_dict()["attempts"][-1]["label"] == f"repair: {fc1} -> fp32"
    assert q4.validation.drop <= 0.02
    pmap = read_tflite(result.bundle / q4.file).precision_map  # what the file stores, not what was asked
    assert pmap[fc1] == "fp32" and sorted(p for n, p in pmap.items() if n != fc1) == ["int8", "int8"]
