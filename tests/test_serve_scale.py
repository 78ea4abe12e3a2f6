"""Serving beyond one process: a Triton model repository checked against Triton's protos, the app on a
local Ray Serve instance, and the GPU path (strict providers; the CUDA tests run only where CUDA is)."""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from serving import Server, digits, free_port, ray_deployment

from edgekit.cli.main import main
from edgekit.runtimes.ort import OrtRunner, cuda_available


@pytest.fixture
def bundle(served_bundle):
    return served_bundle


@pytest.mark.slow
def test_triton_repository_matches_triton_protos(bundle, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    result = CliRunner().invoke(main, ["export", "triton", str(bundle), str(tmp_path / "repo"), "--queue", "64",
                                       "--gpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "repo" / "digits_cnn"
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    manifest = json.loads((bundle / "manifest.json").read_text())
    served = manifest["recommended"]["onnxruntime"]["file"]
    entry = next(f for f in manifest["files"] if f["file"] == served)
    assert config.name == "digits_cnn" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 32
    assert [(i.name, list(i.dims), model_config_pb2.DataType.Name(i.data_type)) for i in config.input] == [
        (t["name"], [d if isinstance(d, int) else -1 for d in t["shape"][1:]], "TYPE_FP32")
        for t in entry["iospec"]["inputs"]]
    assert [o.name for o in config.output] == [t["name"] for t in entry["iospec"]["outputs"]]
    policy = config.dynamic_batching.default_queue_policy
    assert policy.max_queue_size == 64 and policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    trt = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert trt.name == "tensorrt" and trt.parameters["precision_mode"] == "FP16"
    assert hashlib.sha256((folder / "1" / "model.onnx").read_bytes()).hexdigest() == entry["sha256"]


@pytest.mark.slow
def test_missing_gpu_is_an_error_that_names_the_provider(bundle):
    result = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "serve", str(bundle),
                             "--device", "cuda", "--port", str(free_port())], capture_output=True, text=True,
                            timeout=120)
    if cuda_available():
        pytest.skip("this machine has CUDA: the GPU test covers it")
    assert result.returncode == 2 and "CUDAExecutionProvider is not in this onnxruntime build" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_ray_serve_deployment_on_a_local_instance(bundle):
    import tritonclient.http as http

    with ray_deployment(bundle, "replicas=2, max_batch=8, queue=32") as (port, state):
        assert state["replicas"] == 2 and "HEALTHY" in state["status"]
        client = http.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.get_model_metadata("digits_cnn")["parameters"]["batching"] == "dynamic"
        x = digits(3)
        inp = http.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = json.loads((bundle / "manifest.json").read_text())["recommended"]["onnxruntime"]["file"]
        np.testing.assert_allclose(client.infer("digits_cnn", [inp]).as_numpy("logits"),
                                   OrtRunner(bundle / served).run({"image": x})["logits"], rtol=1e-5, atol=1e-5)




def _gpu_evidence(name: str, record: dict) -> None:
    folder = os.environ.get("EDGEKIT_EVIDENCE_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(record, indent=2))


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="no CUDA device with onnxruntime's CUDA provider here")
@pytest.mark.parametrize("device,tolerance", [("cuda", 1e-4), ("tensorrt", 1e-2)])
def test_gpu_serving_matches_the_cpu(bundle, device, tolerance):
    import onnxruntime as ort
    import tritonclient.http as http

    provider = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[device]
    if provider not in ort.get_available_providers():
        pytest.skip(f"{provider} is not in this onnxruntime build")
    record = {"device": device, "runs": []}
    for attempt in range(2):  # the second start finds TensorRT's engines in the bundle's cache folder
        started = time.monotonic()
        server = Server(bundle, "--device", device, "--cache-mb", "0")
        try:
            ready_s = time.monotonic() - started
            client = http.InferenceServerClient(f"127.0.0.1:{server.port}")
            meta = client.get_model_metadata("digits_cnn")
            assert meta["parameters"]["execution_provider"] == provider
            x = digits(8, seed=3)
            inp = http.InferInput("image", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            t = time.perf_counter()
            got = client.infer("digits_cnn", [inp]).as_numpy("logits")
            first_ms = (time.perf_counter() - t) * 1000
            warm = []
            for _ in range(50):
                t = time.perf_counter()
                client.infer("digits_cnn", [inp])
                warm.append((time.perf_counter() - t) * 1000)
            served = meta["parameters"]["file"]
            cpu = OrtRunner(bundle / served).run({"image": x})["logits"]
            diff = float(np.abs(got - cpu).max())
            assert diff <= tolerance * max(1.0, float(np.abs(cpu).max()))
            record["runs"].append({"ready_s": ready_s, "first_request_ms": first_ms,
                                   "warm_p50_ms": float(np.median(warm)), "max_abs_diff_vs_cpu": diff,
                                   "providers": meta["parameters"]["execution_provider"]})
        finally:
            server.stop()
    if device == "tensorrt":
        engines = list((bundle / "cache" / "tensorrt").glob("*"))
        assert engines, "TensorRT wrote no engine to the bundle's cache folder"
        record["engine_files"] = sorted(p.name for p in engines)
    _gpu_evidence(f"serve-gpu-{device}", record)
