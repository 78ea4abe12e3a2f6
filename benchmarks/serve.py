"""The load test of `edgekit serve`: an aiohttp load generator (this process) against the server (its own
process, on 127.0.0.1), on two MobileNetV2-style CNNs (the built-in example at 32 px, and one at 96 px RGB) and an MLP, built for the server
profile first. Ratios from one run, not absolute times: the machine is shared.

    python benchmarks/serve.py [--quick] [--out DIR]

Runs, for each model:
- closed loop (a fixed number of clients, each sending its next request when the last is answered) at 1
  and 32 clients, with `--max-batch 1` and with the batcher (`--max-batch 32`);
- the runner called directly in this process (the floor under the single-client p50);
- open loop (requests sent at a fixed arrival rate, whether or not earlier ones were answered: the mode
  that shows queue growth) at 50% and at 150% of the batcher's closed-loop capacity;
- the cache on a repeated input, and on the same bytes sent with another dtype and shape;
- SIGTERM in the middle of an open-loop run at 1000 requests/s.

Requests carry binary tensors (Triton's binary-tensor extension, tritonclient's default). The goals of the
serving issue are printed PASS or MISS, with the CPU they were measured on.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def cpu_line() -> str:
    from edgekit.measure.bench import cpu_info

    c = cpu_info()
    return f"CPU: {c['model']} ({c['cores']} cores; {', '.join(c['flags'])})"


def build(out: Path) -> dict[str, Path]:
    """The built-in example (a MobileNetV2-style CNN at 32 px), a MobileNetV2-style CNN at 96 px and the
    families' MLP regressor, built for the server profile (ONNX only)."""
    from edgekit.examples import families

    out.mkdir(parents=True, exist_ok=True)
    families.write_nets(out, "real")
    families.write_data(out, "regressor", "real")
    rng = np.random.default_rng(0)
    np.savez(out / "mbv2.npz", image=rng.standard_normal((128, 3, 96, 96)).astype(np.float32))
    bundles = {}
    for name, args in (("digits-cnn-32px", []), ("mbv2-96px", [f"{HERE / 'mbv2.py'}:make_mbv2", "--data",
                                                               str(out / "mbv2.npz")]),
                       ("mlp", [families.source_for(out, "regressor"), "--data", str(out / "regressor.npz")])):
        target = out / name
        if not target.exists():
            cmd = [sys.executable, "-c", "from edgekit.cli.main import main; main()", "build", *args, "--profile",
                   "server", "--prune-method", "none", "--formats", "onnx", "--out", str(target)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode not in (0, 1):
                raise SystemExit(f"build {name} failed: {done.stderr[-800:]}")
        bundles[name] = next(p for p in target.iterdir() if p.is_dir())
    return bundles


class Server:
    def __init__(self, bundle: Path, *flags: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-c", "from edgekit.cli.main import main; main()", "serve",
                                      str(bundle), "--port", str(self.port), *flags],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        meta = json.loads((bundle / "manifest.json").read_text())
        self.model = meta["model"] if isinstance(meta["model"], str) else meta["model"]["name"]
        self.url = f"http://127.0.0.1:{self.port}/v2/models/{self.model}/infer"
        import urllib.request
        for _ in range(300):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"server exited: {self.proc.stderr.read()}")
                time.sleep(0.2)
        raise SystemExit("server not ready")

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.communicate()[1]


def payloads(bundle: Path, n: int, dtype=None, shape=None) -> list[tuple[bytes, dict]]:
    """``n`` distinct batch-1 requests with binary tensors (body, headers)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = next(f for f in manifest["files"] if f["file"] == manifest["recommended"]["onnxruntime"]["file"])
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        inputs, blobs = [], []
        for t in entry["iospec"]["inputs"]:
            s = [1] + [d if isinstance(d, int) else 16 for d in t["shape"][1:]]
            a = rng.standard_normal(s).astype(t["dtype"])
            if dtype is not None:
                a = a.view(dtype)
                s = list(shape or a.shape)
                a = a.reshape(s)
            dt = {"float32": "FP32", "int32": "INT32", "int64": "INT64"}[a.dtype.name]
            raw = a.tobytes()
            inputs.append({"name": t["name"], "shape": s, "datatype": dt, "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        head = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": True}}).encode()
        out.append((head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head)),
                                             "Content-Type": "application/octet-stream"}))
    return out


async def closed_loop(url: str, bodies, clients: int, seconds: float) -> dict:
    import aiohttp

    lat, codes = [], {}
    stop = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client(c):
            i = c
            while time.perf_counter() < stop:
                body, headers = bodies[i % len(bodies)]
                t = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                lat.append(time.perf_counter() - t)
                codes[r.status] = codes.get(r.status, 0) + 1
                i += clients
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        took = time.perf_counter() - start
    return summary(lat, codes, took)


async def open_loop(url: str, bodies, rate: float, seconds: float, on_sent=None, connections: int = 512) -> dict:
    """Requests at a fixed arrival rate over a pool of keep-alive connections; each latency is counted from
    the request's scheduled send time, so time spent waiting for a free connection counts too."""
    import aiohttp

    lat, codes, reject_ms, broken = [], {}, [], []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def one(i):
            body, headers = bodies[i % len(bodies)]
            t = start + i / rate
            try:
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    code = r.status
                    if code == 503:
                        reject_ms.append((time.perf_counter() - t) * 1000)
                        if r.headers.get("Retry-After") is None:
                            codes["503 without Retry-After"] = codes.get("503 without Retry-After", 0) + 1
            except aiohttp.ClientError:
                broken.append(i)
                return
            if code == 200:
                lat.append(time.perf_counter() - t)
            codes[code] = codes.get(code, 0) + 1
        tasks, start, n = [], time.perf_counter(), int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
            if on_sent is not None:
                on_sent(i)
        sending = time.perf_counter() - start
        await asyncio.gather(*tasks)
        took = time.perf_counter() - start
    result = summary(lat, codes, took)
    result.update(offered=n / max(sending, seconds), reject_p99_ms=float(np.percentile(reject_ms, 99))
                  if reject_ms else None, connection_errors=len(broken))
    return result


def summary(lat: list[float], codes: dict, took: float) -> dict:
    ms = np.array(lat) * 1000 if lat else np.array([np.nan])
    return {"throughput": codes.get(200, 0) / took, "p50": float(np.percentile(ms, 50)),
            "p95": float(np.percentile(ms, 95)), "p99": float(np.percentile(ms, 99)), "codes": codes, "n": len(lat)}


def direct_p50(bundle: Path, body: bytes, headers: dict, batch: int = 1) -> float:
    """p50 ms of the served file's runner called in this process, per sample, at ``batch``."""
    from edgekit.runtimes.ort import OrtRunner
    from edgekit.serve.model import open_model
    from edgekit.serve.protocol import decode

    model = open_model(bundle, device="cpu")
    runner = OrtRunner(model.file, threads=model.runners[0].threads)
    inputs = decode(body, headers["Inference-Header-Content-Length"], model.iospec).inputs
    inputs = {k: np.repeat(v, batch, axis=0) for k, v in inputs.items()}
    times = []
    for _ in range(max(50, 2000 // batch)):
        t = time.perf_counter()
        runner.run(inputs)
        times.append(time.perf_counter() - t)
    return float(np.percentile(np.array(times[len(times) // 10:]) * 1000, 50)) / batch


def row(name: str, r: dict) -> str:
    codes = ", ".join(f"{k}: {v}" for k, v in sorted(r["codes"].items(), key=lambda kv: str(kv[0])))
    return f"| {name} | {r['throughput']:.0f} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {codes} |"


def run_model(name: str, bundle: Path, quick: bool, goals: list) -> list[str]:
    secs = 3.0 if quick else 8.0
    bodies = payloads(bundle, 64)
    lines = [f"\n### {name}: {bundle.name}\n", "| run | req/s | p50 ms | p95 ms | p99 ms | codes |", "|---|---|---|---|---|---|"]
    results = {}
    for label, flags in (("max-batch 1", ["--max-batch", "1"]), ("batcher", ["--max-batch", "32"])):
        server = Server(bundle, "--cache-mb", "0", "--queue", "1024", *flags)
        try:
            for clients in (1, 32):
                r = asyncio.run(closed_loop(server.url, bodies, clients, secs))
                results[(label, clients)] = r
                lines.append(row(f"closed loop, {clients} client(s), {label}", r))
        finally:
            server.stop()
    direct = direct_p50(bundle, *bodies[0])
    per_sample = direct_p50(bundle, *bodies[0], batch=32)
    lines.append(f"| runner called directly, batch 1 | {1000 / direct:.0f} | {direct:.3f} | | | |")
    lines.append(f"| runner called directly, batch 32 (per sample) | {1000 / per_sample:.0f} | {per_sample:.3f} | | | "
                 f"the runtime's own batching gain: {direct / per_sample:.2f}x |")
    one, many = results[("batcher", 1)], results[("batcher", 32)]
    base = results[("max-batch 1", 32)]
    ratio, p95_ratio = many["throughput"] / base["throughput"], many["p95"] / base["p95"]
    goals.append((f"{name}: 32 clients, batcher >= 3x the throughput of --max-batch 1, p95 <= 0.5x",
                  ratio >= 3 and p95_ratio <= 0.5, f"{ratio:.2f}x throughput, {p95_ratio:.2f}x p95 (the runtime "
                                                   f"itself runs batch 32 {direct / per_sample:.2f}x faster per sample)"))
    overhead = one["p50"] - direct
    goals.append((f"{name}: single client p50 overhead over the runner <= 0.5 ms", overhead <= 0.5,
                  f"{overhead:.3f} ms ({one['p50']:.3f} vs {direct:.3f} ms)"))
    capacity = many["throughput"]
    # a queue of 64 behind a pool of 512 connections: past capacity the requests wait in the server's queue,
    # not in the generator's connection pool, so the server's backpressure is what answers them
    server = Server(bundle, "--cache-mb", "0", "--queue", "64")
    try:
        half = asyncio.run(open_loop(server.url, bodies, 0.5 * capacity, 15.0 if quick else 60.0))
        lines.append(row(f"open loop, 50% of capacity ({0.5 * capacity:.0f}/s asked, {half['offered']:.0f}/s sent)",
                         half))
        over = asyncio.run(open_loop(server.url, bodies, 1.5 * capacity, secs * 2))
        lines.append(row(f"open loop, 150% of capacity ({1.5 * capacity:.0f}/s asked, {over['offered']:.0f}/s sent)",
                         over))
    finally:
        server.stop()
    non200 = {k: v for k, v in half["codes"].items() if k != 200}
    goals.append((f"{name}: open loop at 50% of capacity: no non-200, p99 <= 25 ms", not non200 and half["p99"] <= 25,
                  f"{non200 or 'all 200'}, p99 {half['p99']:.2f} ms"))
    others = {k: v for k, v in over["codes"].items() if k not in (200, 503)}
    served = over["throughput"] / capacity
    rejects = over["reject_p99_ms"]
    goals.append((f"{name}: open loop at 150%: >= 90% of capacity served, other requests 503 with Retry-After "
                  "within 5 ms (p99), no other 5xx", served >= 0.9 and not others and rejects is not None
                  and rejects <= 5 and not over["connection_errors"],
                  f"{served:.0%} of capacity served; " + (f"503 p99 {rejects:.2f} ms" if rejects is not None else
                  f"no 503: the generator sent only {over['offered'] / capacity:.0%} of capacity") +
                  f"; other codes {others or 'none'}"))
    return lines


def cache_goal(bundle: Path, goals: list) -> list[str]:
    server = Server(bundle, "--cache-mb", "64")
    try:
        bodies = payloads(bundle, 4)
        answers = set()

        async def repeat():
            import aiohttp
            async with aiohttp.ClientSession() as s:
                for i in range(2000):
                    body, headers = bodies[i % 4]
                    async with s.post(server.url, data=body, headers=headers) as r:
                        payload = await r.read()
                        answers.add((i % 4, payload))
                twin = payloads(bundle, 1, dtype=np.int32)[0]  # the first body's bytes, as INT32 (a bad request)
                async with s.post(server.url, data=twin[0], headers=twin[1]) as r:
                    twin_status = r.status
                return twin_status
        twin_status = asyncio.run(repeat())
        text = server.metrics()
    finally:
        server.stop()
    hits = sum(float(v) for v in re.findall(r'edgekit_cache_events_total\{event="hit".*\} (\S+)', text))
    misses = sum(float(v) for v in re.findall(r'edgekit_cache_events_total\{event="miss".*\} (\S+)', text))
    rate = hits / (hits + misses)
    identical = len(answers) == 4
    goals.append(("cache: repeated inputs hit >= 99%, byte-identical answers", rate >= 0.99 and identical,
                  f"hit rate {rate:.4f} over {hits + misses:.0f} lookups, {len(answers)} distinct answers for 4 inputs"))
    from edgekit.serve.cache import cache_key
    a = np.arange(16, dtype=np.float32)
    other = {cache_key("m", {"x": a.view(np.int32)}), cache_key("m", {"x": a.reshape(4, 4)})}
    goals.append(("cache: the same bytes with another dtype or shape is a miss",
                  cache_key("m", {"x": a}) not in other and len(other) == 2,
                  f"3 distinct keys; over HTTP the int32 twin is refused with {twin_status} (the model takes FP32)"))
    return []


def sigterm_goal(bundle: Path, goals: list) -> list[str]:
    server = Server(bundle, "--cache-mb", "0")
    bodies = payloads(bundle, 64)

    def maybe_signal(i):
        if i == 2000:  # two seconds into a 1000 req/s run
            server.proc.send_signal(signal.SIGTERM)
    r = asyncio.run(open_loop(server.url, bodies, 1000.0, 4.0, on_sent=maybe_signal))
    err = server.stop()
    m = re.search(r"drained: (\d+) request\(s\) admitted before the signal, answered: (.*)$", err, re.M)
    ok = bool(m) and m[2] == f"{m[1]} with 200" or (m and m[1] == "0" and m[2] == "none")
    goals.append(("SIGTERM during 1000 req/s: every admitted request gets its 200", bool(ok),
                  (f"{m[1]} admitted at the signal, answered: {m[2]}; after it: "
                   f"{r['codes'].get(503, 0)} answered 503, {r['connection_errors']} refused at connect"
                   if m else err[-300:])))
    return []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="short runs (15 s instead of 60 s at 50%)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="edgekit-serve-bench-"))
    try:  # the generator shares the cores with the server: uvloop lets it offer more load per core
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        loop_name = "uvloop"
    except ImportError:
        loop_name = "asyncio"
    print(cpu_line())
    print(f"load generator: aiohttp on {loop_name}, in its own process; the server: uvicorn (httptools, uvloop)")
    print(f"date: {time.strftime('%Y-%m-%d')}; server and load generator share this machine")
    bundles = build(out)
    goals: list = []
    lines = []
    for name in bundles:
        lines += run_model(name, bundles[name], args.quick, goals)
    lines += cache_goal(bundles["mlp"], goals)
    lines += sigterm_goal(bundles["mlp"], goals)
    print("\n".join(lines))
    print("\n| goal | result | measured |\n|---|---|---|")
    for text, passed, measured in goals:
        print(f"| {text} | {'PASS' if passed else 'MISS'} | {measured} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
