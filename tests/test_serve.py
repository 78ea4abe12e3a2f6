"""`edgekit serve` as a user runs it: the built-in example built for a server profile, served by uvicorn on
127.0.0.1, queried with Triton's own client (tritonclient.http) and raw HTTP; bad input, backpressure,
the cache, /metrics whose counts add up, SIGTERM drain, a taken port, no torch in a server."""
import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from serving import Server, burst, digits, payload, total

from edgekit.runtimes.ort import OrtRunner


@pytest.fixture
def bundle(served_bundle):
    return served_bundle


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



@pytest.mark.slow
def test_backpressure_and_counts_that_add_up(bundle):
    server = Server(bundle, "--queue", "2", "--max-batch", "1", "--cache-mb", "0")
    try:
        results = asyncio.run(burst(server.url + "/v2/models/digits_cnn/infer", 400, 64, payload(1)))
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
        results = asyncio.run(burst(server.url + "/v2/models/digits_cnn/infer", 400, 64, payload(2)))
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
    payloads = [payload(i) for i in range(8)]

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




def test_a_taken_port_is_one_line_and_exit_2(bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "serve", str(bundle),
                                 "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serving_never_imports_torch_or_tensorflow(bundle):
    code = ("import sys; from edgekit.serve import App; a = App(sys.argv[1]); "
            "print(sorted(m for m in ('torch', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(bundle)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


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
