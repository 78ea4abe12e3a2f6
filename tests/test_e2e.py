"""One end-to-end build per profile on the built-in example, checked against the files themselves."""
import hashlib
import json

import pytest

import edgekit
from edgekit.examples import digits
from edgekit.runtimes.openvino import has_bf16
from edgekit.runtimes.ort import OrtRunner, cuda_available


@pytest.mark.slow
@pytest.mark.parametrize("profile, threads", [("iot", 1), ("mobile", 4), ("server", 0)])
def test_example_build(profile, threads, tmp_path):
    result = edgekit.build(profile=profile, out=tmp_path)
    assert result.passed, [g.describe() for g in result.failed_gates]
    bundle = tmp_path / f"digits_cnn-{profile}"
    assert result.bundle == bundle
    expected = {"build.log", "digits_cnn.onnx", "manifest.json", "report.json", "report.md", "report.png"}
    expected |= {"iot": {"digits_cnn_int4.onnx", "digits_cnn.tflite", "digits_cnn_int8.tflite", "digits_cnn_int4.tflite",
                         "digits_cnn_model_data.cc", "digits_cnn_model_data.h", "digits_cnn_model_ops.h"},
                 "mobile": {"digits_cnn_int8.onnx", "digits_cnn.tflite", "digits_cnn_int8.tflite"},
                 "server": {"digits_cnn_fp16.onnx", "digits_cnn.xml", "digits_cnn.bin", "digits_cnn_int8.xml",
                            "digits_cnn_int8.bin"} | ({"digits_cnn_bf16.xml", "digits_cnn_bf16.bin"} if has_bf16() else
                                                      {"digits_cnn_fp16.xml", "digits_cnn_fp16.bin"})}[profile]
    expected |= {"pruning.png"}  # every profile prunes the example (structured): the channels kept per layer
    assert {p.name for p in bundle.iterdir()} == expected
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["files"][0]
    assert entry["file"] == "digits_cnn.onnx"
    for f in manifest["files"]:  # every file in the bundle is hashed as written
        assert f["sha256"] == hashlib.sha256((bundle / f["file"]).read_bytes()).hexdigest()
    data = (bundle / "digits_cnn.onnx").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    assert manifest["schema_version"] == 4 and manifest["labels"] == [str(i) for i in range(10)]
    assert manifest["profile"]["name"] == profile and manifest["profile"]["target"]["threads"] == threads
    assert {"edgekit", "torch", "onnx", "onnxruntime", "numpy"} <= set(manifest["versions"])
    assert entry["iospec"]["inputs"][0] == {"name": "image", "shape": ["batch", 1, 32, 32], "dtype": "float32",
                                            "layout": "NCHW"}
    assert set(entry["precision_map"].values()) == {"fp32"} and "classifier" in entry["precision_map"]
    for f in manifest["files"]:  # quantized files stay within the profile's accuracy budget
        assert f["metric_drop"] <= manifest["profile"]["budget"]["max_accuracy_drop"], f["file"]
    assert set(manifest["recommended"]) == {f["runtime"] for f in manifest["files"]}
    # the profile's pruning ceiling became a smaller exported graph, within the pruning share of the budget
    comp = manifest["compression"]
    budget = manifest["profile"]["budget"]["max_accuracy_drop"] * manifest["profile"]["prune"]["accuracy_share"]
    assert comp["applied"] and comp["method"] == "structured" and 0 < comp["ratio"] <= comp["ceiling"]
    assert comp["after"]["params"] < 0.6 * comp["before"]["params"] and comp["after"]["macs"] < 0.6 * comp["before"]["macs"]
    assert comp["after"]["bytes"] == entry["bytes"]
    report = json.loads((bundle / "report.json").read_text())
    chosen = [a for a in report["compression"]["attempts"] if a["verdict"] == "within budget"
              and a["ratio"] == comp["ratio"]]
    assert len(chosen) == 1 and chosen[0]["drop"] == pytest.approx(entry["metric_drop"], abs=1e-9)
    assert all(a["drop"] > budget for a in report["compression"]["attempts"] if a["ratio"] > comp["ratio"])
    # the example is a real classifier and the exported (pruned) file still is
    assert entry["metrics"]["top1"] > 0.97 and entry["metric_drop"] <= budget  # negative: pruned did better
    lat = entry["latency"]
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["runs"] >= 10
    gpu_line = "GPU found" if cuda_available() else "no GPU found: CPU path"  # the server profile's GPU path
    assert any(gpu_line in p for p in manifest["pending"]) == (profile == "server")
    assert report["data"]["validation"] + report["data"]["calibration"] == 540
    assert "| digits_cnn.onnx | onnx | fp32 |" in (bundle / "report.md").read_text()
    assert "![accuracy drop vs p90 latency" in (bundle / "report.md").read_text()
    assert "## What pruning kept" in (bundle / "report.md").read_text()
    assert "](pruning.png)" in (bundle / "report.md").read_text()
    assert (bundle / "pruning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if profile == "server":  # OpenVINO besides ONNX: each IR at the precision hint it was measured with
        hints = {f["precision"]: f["runtime_options"]["INFERENCE_PRECISION_HINT"] for f in manifest["files"]
                 if f["format"] == "openvino"}
        assert hints == ({"fp32": "f32", "bf16": "bf16", "int8": "f32"} if has_bf16() else
                         {"fp32": "f32", "fp16": "f32", "int8": "f32"})
        assert manifest["fastest"]["runtime"] in ("onnxruntime", "openvino") and manifest["fastest"]["cpu"]
    if profile == "server":  # throughput by batch size, per file, in the manifest and the report
        rows = entry["latency"]["by_batch"]
        assert [r["batch"] for r in rows] == [1, 8, 16, 32] and all(r["mode"] == "batched" for r in rows)
        assert all(r["samples_per_s"] > 0 and r["p50_ms"] <= r["p90_ms"] for r in rows)
        assert "- batch 32 (batched):" in (bundle / "report.md").read_text()
    png = (bundle / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a drawn plot, not an empty canvas
    assert {f["file"] for f in manifest["files"]} == {a.file for a in result.artifacts}
    # the file in the bundle, run by hand in ONNX Runtime, classifies the held-out digits
    arrays = digits.load_arrays()
    logits = OrtRunner(bundle / "digits_cnn.onnx").run({"image": arrays["x"][:64]})["logits"]
    assert (logits.argmax(1) == arrays["y"][:64]).mean() > 0.95


def test_example_weights_reach_their_recorded_accuracy():
    import torch
    model = digits.load_model()
    arrays = digits.load_arrays()
    with torch.no_grad():
        acc = (model.module(torch.from_numpy(arrays["x"])).argmax(1).numpy() == arrays["y"]).mean()
    card = json.loads(digits.CARD.read_text())
    assert acc == pytest.approx(card["heldout_top1"], abs=1e-4) and acc > 0.98
    assert hashlib.sha256(digits.WEIGHTS.read_bytes()).hexdigest() == card["sha256"]
