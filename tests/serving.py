"""What the serving tests share: the light server bundle, a live `edgekit serve` process on a free port,
metric sums, sample inputs and an aiohttp burst."""
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from edgekit.cli.main import main

LIGHT_SERVER = """name = "server-light"
extends = "server"
[target]
formats = ["onnx"]
runtimes = ["onnxruntime"]
[bench]
warmup = 3
runs = 20
batch = 4
max_seconds = 1.0
attempt_runs = 10
attempt_max_seconds = 0.3
"""




def build_bundle(folder: Path) -> Path:
    """The built-in example built for a light server profile, ONNX only, unpruned: the bundle folder."""
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
        self.proc = subprocess.Popen([sys.executable, "-c", "from edgekit.cli.main import main; main()", "serve",
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



async def burst(url: str, n: int, concurrency: int, payload: bytes) -> list[tuple[int, float, str | None]]:
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


def payload(seed: int) -> bytes:
    x = digits(1, seed)
    return json.dumps({"inputs": [{"name": "image", "shape": [1, 1, 32, 32], "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()




@contextlib.contextmanager
def ray_deployment(bundle: Path, options: str):
    """``edgekit.serve.ray.deployment(bundle, <options>)`` on a local Ray instance (2 CPUs), in its own process:
    yields (port, its status: replicas and health); shut down on exit."""
    port = free_port()
    script = f"""
import json, sys, ray
from ray import serve
from edgekit.serve.ray import deployment
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
serve.start(http_options={{"host": "127.0.0.1", "port": {port}}})
serve.run(deployment(sys.argv[1], {options}), route_prefix="/")
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
        yield port, json.loads(line)
    finally:
        try:
            proc.communicate("\n", timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
