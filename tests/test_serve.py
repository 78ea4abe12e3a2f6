"""`edgekit serve` as a user runs it: the built-in example built for a server profile, served by uvicorn on
127.0.0.1, queried with Triton's own client (tritonclient.http) and raw HTTP; bad input, backpressure,
the cache, /metrics whose counts add up, SIGTERM drain, a Triton repository checked against Triton's
protos, and the same app on a local Ray Serve instance."""
import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import main
from edgekit.runtimes.ort import OrtRunner, cuda_available

LIGHT_SERVER = """name = "server-light"
extends = "server"
[bench]
warmup = 3
runs = 20
batch = 4
max_seconds = 1.0
attempt_runs = 10
attempt_max_seconds = 0.3
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve")
    profile = folder / "server-light.toml"
    profile.write_text(LIGHT_SERVER)
    result = CliRunner().invoke(main, ["build", "--profile", str(profile), "--prune-method", "none",
                                       "--out", str(folder / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return next((folder / "out").iterdir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, bundle: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-c", "from edgekit.cli import main; main()", "serve",
                                      str(bundle), "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if self.get("/v2/health/ready")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("server not ready in 60 s")

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path: str, payload: bytes, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=payload, method="POST", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def metrics(self) -> dict[str, float]:
        text = self.get("/metrics")[1].decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                out[key] = float(value)
        return out

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err


def total(metrics: dict, name: str, **labels) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in metrics.items() if k.startswith(name + "{") and all(w in k for w in want))


def digits(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 1, 32, 32)).astype(np.float32)


@pytest.mark.slow
def test_tritonclient_against_edgekit_serve(bundle):
    import tritonclient.http as http

    server = Server(bundle)
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{server.port}")
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("digits_cnn")
        meta = client.get_model_metadata("digits_cnn")
        manifest = json.loads((bundle / "manifest.json").read_text())
        served = manifest["recommended"]["onnxruntime"]["file"]
        entry = next(f for f in manifest["files"] if f["file"] == served)
        assert meta["parameters"]["file"] == served and meta["parameters"]["sha256"] == entry["sha256"]
        assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]
        assert meta["parameters"]["labels"] == manifest["labels"] and meta["parameters"]["batching"] == "dynamic"
        assert meta["parameters"]["execution_provider"] == "CPUExecutionProvider"
        config = client.get_model_config("digits_cnn")
        assert config["max_batch_size"] == 32 and config["dynamic_batching"]["default_queue_policy"]["max_queue_size"] == 256

        x = digits(5)
        direct = OrtRunner(bundle / served).run({"image": x})["logits"]
        before = server.metrics()
        for binary in (True, False):  # the binary-tensor extension (tritonclient's default) and JSON tensors
            inp = http.InferInput("image", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            out = http.InferRequestedOutput("logits", binary_data=binary)
            got = client.infer("digits_cnn", [inp], outputs=[out]).as_numpy("logits")
            np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-5)
        fresh = digits(1, seed=7)
        inp = http.InferInput("image", [1, 1, 32, 32], "FP32")
        inp.set_data_from_numpy(fresh)
        first = client.infer("digits_cnn", [inp]).as_numpy("logits")
        again = client.infer("digits_cnn", [inp]).as_numpy("logits")
        assert first.tobytes() == again.tobytes()  # the second came from the cache, byte for byte
        after = server.metrics()
        assert total(after, "edgekit_cache_events_total", event="hit") - total(before, "edgekit_cache_events_total",
                                                                                event="hit") == 2
        assert total(after, "edgekit_requests_total", code="200") - total(before, "edgekit_requests_total",
                                                                           code="200") == 4
        assert 'execution_provider="CPUExecutionProvider"' in server.get("/metrics")[1].decode()
        with pytest.raises(Exception, match="unknown model 'nope'"):
            client.infer("nope", [inp])
    finally:
        code, err = server.stop()
    assert code == 0, err


@pytest.mark.slow
def test_bad_input_gets_400_and_the_server_keeps_serving(bundle):
    server = Server(bundle, "--cache-mb", "0", "--queue", "4")
    good = {"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.0] * 1024}
    cases = [
        (dict(good, shape=[1, 1, 16, 16], data=[0.0] * 256), 400, "does not fit the model's [-1, 1, 32, 32]"),
        (dict(good, datatype="INT64"), 400, "datatype INT64 does not match the model's FP32"),
        (dict(good, name="pixels"), 400, "unknown input 'pixels'; the model takes image"),
        (dict(good, data=["x"] * 1024), 400, "'x' is not a float32 value"),
        (dict(good, data=[float("nan")] + [0.0] * 1023), 400, "NaN or infinite"),
    ]
    try:
        for tensor, code, message in cases:
            status, _, payload = server.post("/v2/models/digits_cnn/infer", json.dumps({"inputs": [tensor]}).encode())
            assert status == code and message in json.loads(payload)["error"], (status, payload)
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.putrequest("POST", "/v2/models/digits_cnn/infer")
        conn.putheader("Content-Length", str(65 * 2 ** 20))  # refused on its headers, before any body is sent
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 400 and "over the limit" in json.loads(response.read())["error"]
        conn.close()
        status, _, payload = server.post("/v2/models/other/infer", json.dumps({"inputs": [good]}).encode())
        assert status == 404 and "unknown model 'other'" in json.loads(payload)["error"]
        malformed = [{"inputs": [dict(good, parameters="x")]}, {"inputs": [dict(good, name=["image"])]},
                     {"inputs": [good], "outputs": [{"name": "logits", "parameters": "binary"}]}]
        for body_ in malformed * 2:  # more than the queue holds: a leaked slot would turn the next one into 503
            status, _, payload = server.post("/v2/models/digits_cnn/infer", json.dumps(body_).encode())
            assert status == 400 and "malformed inference request" in json.loads(payload)["error"], payload
        big = dict(good, shape=[33, 1, 32, 32], data=[0.0] * 33 * 1024)
        status, _, payload = server.post("/v2/models/digits_cnn/infer", json.dumps({"inputs": [big]}).encode())
        assert status == 400 and "a batch of 33 is over this server's --max-batch 32" in json.loads(payload)["error"]
        import gzip
        status, _, payload = server.post("/v2/models/digits_cnn/infer", gzip.compress(json.dumps(
            {"inputs": [good]}).encode()), {"Content-Encoding": "gzip"})
        assert status == 200 and json.loads(payload)["outputs"][0]["shape"] == [1, 10]  # still serving
        m = server.metrics()
        assert total(m, "edgekit_requests_total", outcome="error") == len(cases) + 2 + 6 + 1
        assert total(m, "edgekit_requests_total", outcome="ok") == 1
        assert m['edgekit_queue_depth{model="digits_cnn"}'] == 0
    finally:
        server.stop()


async def _burst(url: str, n: int, concurrency: int, payload: bytes) -> list[tuple[int, float, str | None]]:
    import aiohttp

    results = []
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:
        async def one():
            async with sem:
                start = time.perf_counter()
                async with session.post(url, data=payload) as r:
                    await r.read()
                    results.append((r.status, time.perf_counter() - start, r.headers.get("Retry-After")))
        await asyncio.gather(*(one() for _ in range(n)))
    return results


def _payload(seed: int) -> bytes:
    x = digits(1, seed)
    return json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()


@pytest.mark.slow
def test_backpressure_and_counts_that_add_up(bundle):
    server = Server(bundle, "--queue", "2", "--max-batch", "1", "--cache-mb", "0")
    try:
        results = asyncio.run(_burst(server.url + "/v2/models/digits_cnn/infer", 400, 64, _payload(1)))
        codes = [c for c, _, _ in results]
        assert set(codes) <= {200, 503} and codes.count(200) > 0 and codes.count(503) > 0, sorted(set(codes))
        assert all(retry == "1" for c, _, retry in results if c == 503)
        m = server.metrics()
        requests = total(m, "edgekit_requests_total")
        ok, rejected, errors = (total(m, "edgekit_requests_total", outcome=o) for o in ("ok", "rejected", "error"))
        assert requests == len(results) == ok + rejected + errors and errors == 0
        assert ok == codes.count(200) and rejected == codes.count(503)
        assert total(m, "edgekit_rejections_total", reason="queue_full") == codes.count(503)
        assert m['edgekit_batch_size_sum{model="digits_cnn"}'] == m['edgekit_inferences_total{model="digits_cnn"}'] == ok
        assert m['edgekit_batch_size_count{model="digits_cnn"}'] == ok  # --max-batch 1: one request per batch
    finally:
        server.stop()
    server = Server(bundle, "--cache-mb", "0")  # the batcher on: the same burst is served whole, in batches
    try:
        results = asyncio.run(_burst(server.url + "/v2/models/digits_cnn/infer", 400, 64, _payload(2)))
        assert [c for c, _, _ in results].count(200) == 400
        m = server.metrics()
        batches = m['edgekit_batch_size_count{model="digits_cnn"}']
        assert m['edgekit_batch_size_sum{model="digits_cnn"}'] == m['edgekit_inferences_total{model="digits_cnn"}'] == 400
        assert batches < 400  # requests were stacked
    finally:
        server.stop()


@pytest.mark.slow
def test_sigterm_drains_admitted_requests(bundle):
    server = Server(bundle, "--cache-mb", "0", "--max-batch", "1", "--threads", "1")
    payloads = [_payload(i) for i in range(8)]

    async def load():
        import aiohttp

        done, signalled, broken = [], [], []  # (status, sent before the signal?)
        async with aiohttp.ClientSession() as session:
            async def client(c):
                i = 0
                while not signalled or time.monotonic() - signalled[0] < 1.0:
                    sent = time.monotonic()
                    try:
                        async with session.post(server.url + "/v2/models/digits_cnn/infer",
                                                data=payloads[(c + i) % 8]) as r:
                            await r.read()
                            done.append((r.status, bool(signalled) and sent < signalled[0] < time.monotonic()))
                    except aiohttp.ClientError as exc:
                        if not signalled or sent < signalled[0]:  # in flight at SIGTERM, yet cut off
                            broken.append(repr(exc))
                        return  # sent during the drain to a closing connection: not admitted
                    i += 1
            clients = [asyncio.create_task(client(c)) for c in range(32)]
            while len(done) < 100:
                await asyncio.sleep(0.005)
            signalled.append(time.monotonic())
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*clients)
        return done, broken
    done, broken = asyncio.run(load())
    code = server.proc.wait(timeout=30)  # it exits by itself once the admitted requests are answered
    err = server.proc.stderr.read()
    assert code == 0, err
    assert not broken, broken
    statuses = [s for s, _ in done]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    admitted = re.search(r"drained: (\d+) request\(s\) admitted before the signal, answered: (\d+) with 200$",
                         err, re.M)
    assert admitted and admitted[1] == admitted[2] and int(admitted[1]) > 0, err  # every admitted one got 200
    answered_after = [s for s, across in done if across and s == 200]
    assert len(answered_after) >= int(admitted[1])
    assert 503 in statuses  # requests that came during the drain were refused, not run


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
    import hashlib
    assert hashlib.sha256((folder / "1" / "model.onnx").read_bytes()).hexdigest() == entry["sha256"]


@pytest.mark.slow
def test_missing_gpu_is_an_error_that_names_the_provider(bundle):
    result = subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main()", "serve", str(bundle),
                             "--device", "cuda", "--port", str(free_port())], capture_output=True, text=True,
                            timeout=120)
    if cuda_available():
        pytest.skip("this machine has CUDA: the GPU test covers it")
    assert result.returncode == 2 and "CUDAExecutionProvider is not in this onnxruntime build" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_is_one_line_and_exit_2(bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main()", "serve", str(bundle),
                                 "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serving_never_imports_torch_or_tensorflow(bundle):
    code = ("import sys; from edgekit.serve import App; a = App(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.slow
def test_ray_serve_deployment_on_a_local_instance(bundle):
    import tritonclient.http as http

    port = free_port()
    script = f"""
import json, sys, numpy as np, ray
from ray import serve
from edgekit.serve.ray import deployment
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
serve.start(http_options={{"host": "127.0.0.1", "port": {port}}})
serve.run(deployment(sys.argv[1], replicas=2, max_batch=8, queue=32), route_prefix="/")
status = serve.status().applications["default"].deployments["edgekit"]
print(json.dumps({{"replicas": sum(status.replica_states.values()), "status": str(status.status)}}), flush=True)
sys.stdin.readline()
serve.shutdown(); ray.shutdown()
"""
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen([sys.executable, "-c", script, str(bundle)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-2000:]
        state = json.loads(line)
        assert state["replicas"] == 2 and "HEALTHY" in state["status"]
        client = http.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.get_model_metadata("digits_cnn")["parameters"]["batching"] == "dynamic"
        x = digits(3)
        inp = http.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        served = json.loads((bundle / "manifest.json").read_text())["recommended"]["onnxruntime"]["file"]
        np.testing.assert_allclose(client.infer("digits_cnn", [inp]).as_numpy("logits"),
                                   OrtRunner(bundle / served).run({"image": x})["logits"], rtol=1e-5, atol=1e-5)
    finally:
        try:
            proc.communicate("\n", timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_prometheus_names_are_stable():
    from edgekit.serve.batcher import BatchRecord
    from edgekit.serve.metrics import Metrics

    m = Metrics("demo")
    m.answered(200, 0.001)
    m.answered(503)
    m.rejected("queue_full")
    m.batch(BatchRecord(requests=3, samples=5, queue_s=[0.001, 0.002, 0.0], infer_s=0.004))
    m.depth.labels("demo").set(0)
    text = m.exposition().decode()
    for name in ("edgekit_requests_total", "edgekit_rejections_total", "edgekit_batch_size_bucket",
                 "edgekit_queue_seconds_bucket", "edgekit_inference_seconds_bucket", "edgekit_request_seconds_bucket",
                 "edgekit_queue_depth", "edgekit_model_info"):
        assert re.search(rf"^{name}", text, re.M), name
    assert re.search(r'^edgekit_requests_total\{(?=.*code="503")(?=.*outcome="rejected").*\} 1\.0$', text, re.M)
    assert re.search(r'^edgekit_batch_size_sum\{model="demo"\} 3\.0$', text, re.M)
    assert re.search(r'^edgekit_inferences_total\{model="demo"\} 3\.0$', text, re.M)
    assert re.search(r'^edgekit_queue_seconds_count\{model="demo"\} 3\.0$', text, re.M)


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
