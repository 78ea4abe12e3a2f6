"""The serving parts alone: the KServe v2 codec, the response cache and the dynamic batcher (on a real ONNX
Runtime session over a small ONNX MLP)."""
import asyncio
import json

import numpy as np
import pytest
import torch

from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.runtimes.ort import OrtRunner
from edgekit.serve.batcher import Batcher, DeadlineExceeded, QueueFull
from edgekit.serve.cache import ResponseCache, cache_key
from edgekit.serve.protocol import BadRequest, InferRequest, decode, encode

SPEC = IOSpec((TensorSpec("x", ("batch", 4), "float32"), TensorSpec("ids", ("batch", 3), "int64")),
              (TensorSpec("y", ("batch", 2), "float32"),))


def body(*tensors, **extra):
    return json.dumps({"inputs": list(tensors), **extra}).encode()


def x_tensor(data=None, shape=(1, 4), datatype="FP32", name="x"):
    return {"name": name, "shape": list(shape), "datatype": datatype,
            "data": data if data is not None else [0.5] * int(np.prod(shape))}


IDS = {"name": "ids", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}


def test_decode_json_and_binary_tensors():
    req = decode(body(x_tensor([[1, 2.5, 3, 4]]), IDS, id="r1"), None, SPEC)
    np.testing.assert_array_equal(req.inputs["x"], np.array([[1, 2.5, 3, 4]], np.float32))
    assert req.inputs["ids"].dtype == np.int64 and req.outputs == ("y",) and req.id == "r1" and not req.binary
    raw = np.arange(8, dtype=np.float32).reshape(2, 4)
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": raw.nbytes}},
                                  {"name": "ids", "shape": [2, 3], "datatype": "INT64", "data": [0] * 6}],
                       "parameters": {"binary_data_output": True}}).encode()
    req = decode(head + raw.tobytes(), str(len(head)), SPEC)
    np.testing.assert_array_equal(req.inputs["x"], raw)
    assert req.binary == {"y"}
    payload, header = encode(req, {"y": np.array([[1, 2], [3, 4]], np.float32)}, "m")
    meta = json.loads(payload[:header])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(np.frombuffer(payload[header:], np.float32), [1, 2, 3, 4])


@pytest.mark.parametrize("tensors,message", [
    ([x_tensor(name="image"), IDS], "unknown input 'image'; the model takes x, ids"),
    ([x_tensor(datatype="FP64"), IDS], "datatype FP64 does not match the model's FP32"),
    ([x_tensor(shape=(1, 5)), IDS], "shape [1, 5] does not fit the model's [-1, 4]"),
    ([x_tensor(["a", "b", "c", "d"]), IDS], "'a' is not a float32 value"),
    ([x_tensor([1, float("nan"), 3, 4]), IDS], "holds NaN or infinite values"),
    ([x_tensor([1, 2, 3]), IDS], "3 values do not fill shape [1, 4]"),
    ([x_tensor()], "missing input(s) 'ids'"),
    ([x_tensor(), dict(IDS, data=[1.5, 2, 3])], "1.5 is not a int64 value"),
    ([x_tensor(shape=(2, 4)), IDS], "disagree on the batch size"),
])
def test_decode_refuses_bad_tensors_with_one_clear_line(tensors, message):
    with pytest.raises(BadRequest) as exc:
        decode(body(*tensors), None, SPEC)
    assert message in str(exc.value) and exc.value.status == 400


def test_decode_refuses_broken_bodies():
    for raw, header, message in [(b"{nope", None, "not JSON"), (b'{"x": 1}', None, "'inputs' list"),
                                 (body(x_tensor(), IDS), "9999", "does not fit a body"),
                                 (body(x_tensor(), IDS, outputs=[{"name": "z"}]), None, "unknown output(s) ['z']")]:
        with pytest.raises(BadRequest, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            decode(raw, header, SPEC)


def test_cache_key_separates_dtype_and_shape_of_the_same_bytes():
    a = np.arange(8, dtype=np.float32)
    same_bytes_other_dtype = a.view(np.int32)
    assert cache_key("s", {"x": a}) == cache_key("s", {"x": a.copy()})
    assert cache_key("s", {"x": a}) != cache_key("s", {"x": same_bytes_other_dtype})
    assert cache_key("s", {"x": a}) != cache_key("s", {"x": a.reshape(2, 4)})
    assert cache_key("s", {"x": a}) != cache_key("other-model", {"x": a})


def test_cache_lru_budget_ttl_and_shared_misses():
    now = [0.0]
    cache = ResponseCache(max_bytes=3 * (16 + 32), ttl_s=10.0, clock=lambda: now[0])
    out = {"y": np.zeros(4, np.float32)}  # 16 bytes + a 32-byte key
    for k in range(4):
        cache.put(bytes([k]) * 32, out)
    assert len(cache) == 3 and cache.stats.evictions == 1 and cache.get(bytes([0]) * 32) is None
    assert cache.get(bytes([1]) * 32) is not None
    cache.put(bytes([9]) * 32, out)  # 1 was used last: 2 is the one evicted
    assert cache.get(bytes([2]) * 32) is None and cache.get(bytes([1]) * 32) is not None
    now[0] = 11.0
    assert cache.get(bytes([1]) * 32) is None and cache.stats.expired == 1

    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.05)
        return {"y": np.array([1.0, 2.0], np.float32)}

    async def many():
        live = ResponseCache(max_bytes=1 << 20)
        results = await asyncio.gather(*(live.lookup(b"k" * 32, compute) for _ in range(5)))
        again = await live.lookup(b"k" * 32, compute)
        return results, again, live.stats
    results, again, stats = asyncio.run(many())
    assert len(calls) == 1 and sorted(how for _, how in results) == ["miss"] + ["shared"] * 4
    assert again[1] == "hit" and again[0]["y"].tobytes() == results[0][0]["y"].tobytes()
    assert (stats.hits, stats.misses, stats.shared) == (1, 1, 4)


def test_cache_stores_only_successes():
    async def failing():
        raise RuntimeError("runtime fell over")

    async def go():
        cache = ResponseCache(max_bytes=1 << 20)
        with pytest.raises(RuntimeError):
            await cache.lookup(b"k", failing)
        return len(cache)
    assert asyncio.run(go()) == 0


@pytest.fixture(scope="module")
def mlp_runner(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)).eval()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    torch.onnx.export(net, (torch.randn(2, 16),), path, input_names=["x"], output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return OrtRunner(path)


class CountingRunner:
    """The real ORT session, with the batch sizes it was called with recorded."""

    def __init__(self, runner, delay_s=0.0):
        self.runner, self.delay_s, self.calls = runner, delay_s, []

    def run(self, inputs):
        import time
        self.calls.append(len(inputs["x"]))
        time.sleep(self.delay_s)
        return self.runner.run(inputs)


def test_batcher_stacks_concurrent_requests_and_splits_exactly(mlp_runner):
    runner = CountingRunner(mlp_runner, delay_s=0.02)
    xs = [np.random.default_rng(i).standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(24)]

    async def go():
        b = Batcher([runner], max_batch=32, max_delay_s=0.002, queue=64, batchable=True)
        for _ in xs:
            b.admit()
        first = asyncio.get_running_loop().create_task(b.submit({"x": xs[0]}, deadline=1e12))
        await asyncio.sleep(0.005)  # the first runs alone at once; the others queue up while it runs
        outs = await asyncio.gather(first, *(b.submit({"x": x}, deadline=1e12) for x in xs[1:]))
        await b.close()
        return outs, b
    outs, b = asyncio.run(go())
    assert runner.calls[0] == len(xs[0])  # nothing else was pending: it did not wait for company
    assert runner.calls[1] > 3 and sum(runner.calls) == sum(len(x) for x in xs)  # the queued ones were stacked
    assert all(c <= 32 for c in runner.calls) and b.reserved == 0 and b.idle
    for x, out in zip(xs, outs):
        np.testing.assert_allclose(out["y"], mlp_runner.run({"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_batcher_does_not_wait_when_nothing_else_is_pending(mlp_runner):
    import time

    async def go():
        b = Batcher([mlp_runner], max_batch=32, max_delay_s=0.5, queue=4, batchable=True)
        b.admit()
        start = time.perf_counter()
        await b.submit({"x": np.zeros((1, 16), np.float32)}, deadline=1e12)
        took = time.perf_counter() - start
        await b.close()
        return took
    assert asyncio.run(go()) < 0.25  # far under max_delay: a lone request never waits for company


def test_batcher_queue_is_bounded_and_late_requests_never_run(mlp_runner):
    runner = CountingRunner(mlp_runner, delay_s=0.1)

    async def go():
        b = Batcher([runner], max_batch=1, max_delay_s=0.0, queue=3, batchable=True)
        loop = asyncio.get_running_loop()
        for _ in range(3):
            b.admit()
        with pytest.raises(QueueFull):
            b.admit()
        first = loop.create_task(b.submit({"x": np.zeros((1, 16), np.float32)}, deadline=1e12))
        await asyncio.sleep(0.01)  # the first is running for 100 ms
        late = [loop.create_task(b.submit({"x": np.ones((1, 16), np.float32)}, deadline=b.clock() + 0.03))
                for _ in range(2)]
        results = await asyncio.gather(first, *late, return_exceptions=True)
        await b.close()
        return results, b
    results, b = asyncio.run(go())
    assert isinstance(results[0], dict)
    assert all(isinstance(r, DeadlineExceeded) for r in results[1:])
    assert runner.calls == [1] and b.reserved == 0  # the late ones were answered without running


def test_static_batch_runs_one_request_at_a_time(mlp_runner):
    runner = CountingRunner(mlp_runner, delay_s=0.01)

    async def go():
        b = Batcher([runner], max_batch=32, max_delay_s=0.002, queue=16, batchable=False)
        for _ in range(6):
            b.admit()
        await asyncio.gather(*(b.submit({"x": np.zeros((1, 16), np.float32)}, deadline=1e12) for _ in range(6)))
        await b.close()
    asyncio.run(go())
    assert runner.calls == [1] * 6


def test_encode_keeps_json_outputs_exact():
    req = InferRequest({"x": np.zeros((1, 4), np.float32)}, ("y",))
    y = np.array([[0.1, 1e-8]], np.float32)
    payload, header = encode(req, {"y": y}, "m")
    assert header is None
    data = json.loads(payload)["outputs"][0]
    np.testing.assert_array_equal(np.array(data["data"], np.float32).reshape(data["shape"]), y)


def test_a_cancelled_leader_does_not_fail_the_requests_that_shared_it():
    calls = []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.05)
        return {"y": np.array([float(len(calls))], np.float32)}

    async def go():
        cache = ResponseCache(max_bytes=1 << 20)
        leader = asyncio.get_running_loop().create_task(cache.lookup(b"k", compute))
        await asyncio.sleep(0.01)
        waiters = [asyncio.get_running_loop().create_task(cache.lookup(b"k", compute)) for _ in range(3)]
        await asyncio.sleep(0.01)
        leader.cancel()  # its client went away
        results = await asyncio.gather(*waiters)
        return results, leader
    results, leader = asyncio.run(go())
    assert leader.cancelled()
    assert all(r[0]["y"].size == 1 for r in results) and len(calls) == 2  # one waiter recomputed, two shared it


def test_a_cancelled_request_never_runs_and_gives_its_slot_back(mlp_runner):
    runner = CountingRunner(mlp_runner, delay_s=0.05)

    async def go():
        b = Batcher([runner], max_batch=1, max_delay_s=0.0, queue=4, batchable=True)
        loop = asyncio.get_running_loop()
        b.admit()
        b.admit()
        first = loop.create_task(b.submit({"x": np.zeros((1, 16), np.float32)}, deadline=1e12))
        await asyncio.sleep(0.01)
        second = loop.create_task(b.submit({"x": np.ones((1, 16), np.float32)}, deadline=1e12))
        await asyncio.sleep(0.01)
        second.cancel()
        await first
        await asyncio.sleep(0.1)
        await b.close()
        return b
    b = asyncio.run(go())
    assert runner.calls == [1] and b.reserved == 0


def test_a_batcher_survives_a_second_event_loop(mlp_runner):
    b = Batcher([mlp_runner], max_batch=8, max_delay_s=0.0, queue=4, batchable=True)

    async def once():
        b.admit()
        out = await b.submit({"x": np.zeros((2, 16), np.float32)}, deadline=1e12)
        await b.close()
        return out["y"].shape
    assert asyncio.run(once()) == (2, 3) and asyncio.run(once()) == (2, 3)  # a second lifespan, a new loop


def test_triton_config_of_a_batch_only_tensor_parses_with_a_reshape():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from edgekit.serve.triton import config_for, to_pbtxt

    spec = IOSpec((TensorSpec("user_id", ("batch",), "int64"),), (TensorSpec("click", ("batch",), "float32"),))
    text = to_pbtxt(config_for("rec", spec, batchable=True, max_batch=16, max_delay_us=500, queue=8,
                              timeout_us=10_000, instances=2, gpu=False))
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert list(config.input[0].dims) == [1] and list(config.input[0].reshape.shape) == []
    assert config.input[0].HasField("reshape") and config.output[0].data_type == model_config_pb2.TYPE_FP32
    assert config.instance_group[0].count == 2 and config.dynamic_batching.default_queue_policy.max_queue_size == 8
