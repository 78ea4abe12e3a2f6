"""`edgekit serve` on a language-model bundle, as a user runs it: the example LM (test size) built to a GGUF file,
served on 127.0.0.1 and queried with the official `openai` client and plain HTTP (KServe v2 generate). Greedy
answers are checked against llama-cpp-python's own generate on the same file; continuous batching, the prefix
cache, disconnects, overload, SIGTERM, bad bodies, metrics that add up, Ray Serve, and no torch in the server."""
from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from serving import Server, ray_deployment, total

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow
NAME = "tinylm-test-3"
LONG = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 450, "temperature": 0}  # runs to length


@pytest.fixture(scope="module")
def lm_bundle(tinylm_test, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve-lm")
    r = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "build",
                        str(tinylm_test[0]), "--profile", "mobile", "--formats", "gguf", "--threads", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out / f"{tinylm_test[0].name}-mobile"


@pytest.fixture(scope="module")
def server(lm_bundle):
    s = Server(lm_bundle, "--threads", "1", "--max-seqs", "4")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def gguf(lm_bundle):
    manifest = json.loads((lm_bundle / "manifest.json").read_text())
    return lm_bundle / manifest["recommended"] / "model.gguf"


@pytest.fixture(scope="module")
def llm(gguf):
    from llama_cpp import Llama

    return Llama(str(gguf), n_ctx=512, n_threads=1, verbose=False)


def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_chat_and_completion_match_llama_cpp_greedy(server, llm):
    c = client(server)
    assert [m.id for m in c.models.list().data] == [NAME]
    messages = [{"role": "user", "content": "What is a list in Python?"}]
    got = c.chat.completions.create(model=NAME, messages=messages, max_tokens=24, temperature=0)
    want = llm.create_chat_completion(messages=messages, max_tokens=24, temperature=0)
    assert got.choices[0].message.content == want["choices"][0]["message"]["content"]
    assert got.choices[0].message.role == "assistant"
    assert got.usage.prompt_tokens == want["usage"]["prompt_tokens"]  # the GGUF's template, no BOS added on top
    assert got.usage.completion_tokens == want["usage"]["completion_tokens"]
    assert got.choices[0].finish_reason == want["choices"][0]["finish_reason"]
    for prompt in ("The list of", "A dictionary maps"):
        got = c.completions.create(model=NAME, prompt=prompt, max_tokens=30, temperature=0)
        want = llm.create_completion(prompt, max_tokens=30, temperature=0)
        assert got.choices[0].text == want["choices"][0]["text"] and got.choices[0].text
        assert got.usage.prompt_tokens == want["usage"]["prompt_tokens"]
        assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens


def test_streaming_gives_the_same_text_with_usage_last(server):
    c = client(server)
    messages = [{"role": "user", "content": "Name a loop."}]
    whole = c.chat.completions.create(model=NAME, messages=messages, max_tokens=20, temperature=0)
    chunks = list(c.chat.completions.create(model=NAME, messages=messages, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices]
    assert finishes[-1] == whole.choices[0].finish_reason and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    long = [ch for ch in c.chat.completions.create(model=NAME, stream=True, **LONG) if ch.choices]
    assert sum(bool(ch.choices[0].delta.content) for ch in long) >= 2  # streamed as it was made, not at the end


def test_stop_sequences_and_seeded_sampling(server):
    c = client(server)
    full = c.completions.create(model=NAME, prompt="The list of", max_tokens=30, temperature=0).choices[0].text
    cut = full.strip()[:6].split()[-1]  # a word inside the greedy answer
    at = full.index(cut)
    got = c.completions.create(model=NAME, prompt="The list of", max_tokens=30, temperature=0, stop=[cut, "zzzz"])
    assert got.choices[0].text == full[:at] and got.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=NAME, prompt="The list of", max_tokens=30, temperature=0, stop=cut, stream=True))
    assert streamed == full[:at]
    draws = [c.completions.create(model=NAME, prompt="Once", max_tokens=24, temperature=1.0, top_p=0.95,
                                  extra_body={"top_k": 40}, seed=seed).choices[0].text for seed in (11, 11, 12, 13)]
    assert draws[0] == draws[1]  # the same seed, the same text
    assert len(set(draws[1:])) > 1  # other seeds draw otherwise


def test_kserve_generate_and_generate_stream(server):
    c = client(server)
    want = c.completions.create(model=NAME, prompt="The list of", max_tokens=12, temperature=0).choices[0].text
    body = json.dumps({"text_input": "The list of", "parameters": {"max_tokens": 12, "temperature": 0}}).encode()
    status, _, raw = server.post(f"/v2/models/{NAME}/generate", body)
    answer = json.loads(raw)
    assert status == 200 and answer["text_output"] == want and answer["model_name"] == NAME
    assert answer["finish_reason"] in ("stop", "length") and answer["usage"]["completion_tokens"] > 0
    status, headers, raw = server.post(f"/v2/models/{NAME}/generate_stream", body)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert "".join(e["text_output"] for e in events) == want and events[-1]["finish_reason"] == answer["finish_reason"]
    status, _, raw = server.get(f"/v2/models/{NAME}")[0], None, server.get(f"/v2/models/{NAME}")[1]
    meta = json.loads(raw)
    assert status == 200 and meta["parameters"]["runtime"] == "llama.cpp" and meta["parameters"]["max_seqs"] == 4
    assert server.post("/v2/models/other/generate", body)[0] == 404


def _stream_lines(port: int, body: dict, path: str = "/v1/chat/completions"):
    """A raw HTTP/1.1 streaming request: the socket and a reader of its SSE data lines."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    payload = json.dumps(dict(body, stream=True)).encode()
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock, sock.makefile("rb")


def _read_to_done(lines, seen: dict) -> None:
    finish = None
    for line in lines:
        if line.startswith(b"data: {"):
            finish = json.loads(line[6:])["choices"][0]["finish_reason"] or finish
        if line.startswith(b"data: [DONE]"):
            break
    seen.update(finish=finish, at=time.monotonic())


def test_continuous_batching_a_short_request_finishes_first(lm_bundle):
    """A long stream is running; a short request sent after its first token ends before it with --max-seqs 4,
    and after it with --max-seqs 1 (the same server, one sequence at a time)."""
    order = {}
    for seqs in ("4", "1"):
        server = Server(lm_bundle, "--threads", "1", "--max-seqs", seqs)
        try:
            sock, lines = _stream_lines(server.port, LONG)
            first = None
            while first is None:
                line = lines.readline()
                assert line, "the long stream ended before its first token"
                if line.startswith(b"data: {"):
                    first = json.loads(line[6:])
            reader = threading.Thread(target=_read_to_done, args=(lines, seen := {}))
            reader.start()  # the long stream is read as it comes, in its own thread
            status, _, raw = server.post("/v1/completions", b'{"prompt": "A", "max_tokens": 3, "temperature": 0}')
            short_done = time.monotonic()
            reader.join(timeout=60)
            lines.close()
            sock.close()
            finish, long_done = seen["finish"], seen["at"]
            assert status == 200 and json.loads(raw)["choices"][0]["finish_reason"] in ("length", "stop")
            order[seqs] = (finish, short_done < long_done)
        finally:
            server.stop()
    assert order["4"] == ("length", True), order  # joined the running batch at a token boundary
    assert order["1"] == ("length", False), order  # waited for the long one


def test_prefix_cache_hit_and_miss_with_identical_answers(lm_bundle, server):
    system = "You answer questions about Python. " * 12
    first = [{"role": "system", "content": system}, {"role": "user", "content": "What is a tuple?"}]
    second = [{"role": "system", "content": system}, {"role": "user", "content": "What is a set?"}]
    c = client(server)
    before = server.metrics()
    a = c.chat.completions.create(model=NAME, messages=first, max_tokens=8, temperature=0)
    b = c.chat.completions.create(model=NAME, messages=second, max_tokens=8, temperature=0)
    other = c.completions.create(model=NAME, prompt="Zebra crossing", max_tokens=4, temperature=0)
    after = server.metrics()
    assert b.usage.prompt_tokens_details.cached_tokens > 0.8 * a.usage.prompt_tokens  # the system prompt
    assert other.usage.prompt_tokens_details.cached_tokens <= 1  # at most the BOS
    hits = total(after, "edgekit_lm_prefix_cache_queries_total", result="hit") - \
        total(before, "edgekit_lm_prefix_cache_queries_total", result="hit")
    saved = total(after, "edgekit_lm_prefix_cache_tokens_saved_total") - \
        total(before, "edgekit_lm_prefix_cache_tokens_saved_total")
    assert hits >= 1 and saved >= b.usage.prompt_tokens_details.cached_tokens
    cold = Server(lm_bundle, "--threads", "1", "--no-prefix-cache")
    try:
        c2 = client(cold)
        c2.chat.completions.create(model=NAME, messages=first, max_tokens=8, temperature=0)
        b2 = c2.chat.completions.create(model=NAME, messages=second, max_tokens=8, temperature=0)
        assert b2.usage.prompt_tokens_details.cached_tokens == 0
        assert b2.choices[0].message.content == b.choices[0].message.content  # the cache changes no answer
        assert total(cold.metrics(), "edgekit_lm_prefix_cache_queries_total", result="hit") == 0
    finally:
        cold.stop()


def test_a_client_that_goes_away_cancels_its_sequence(server):
    before = server.metrics()
    sock, lines = _stream_lines(server.port, LONG)
    while not lines.readline().startswith(b"data: {"):
        pass
    lines.close()  # the reader holds the socket open too
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = server.metrics()
        if total(m, "edgekit_lm_sequences_finished_total", reason="cancelled") > \
                total(before, "edgekit_lm_sequences_finished_total", reason="cancelled") and \
                total(m, "edgekit_lm_requests_total", code="499") > total(before, "edgekit_lm_requests_total",
                                                                          code="499"):
            break
        time.sleep(0.05)
    made = total(m, "edgekit_lm_generation_tokens_total") - total(before, "edgekit_lm_generation_tokens_total")
    assert total(m, "edgekit_lm_sequences_finished_total", reason="cancelled") == \
        total(before, "edgekit_lm_sequences_finished_total", reason="cancelled") + 1
    assert 0 < made < 450  # it stopped early
    assert total(m, "edgekit_lm_requests_total", code="499") == total(before, "edgekit_lm_requests_total",
                                                                      code="499") + 1


def test_every_bad_body_is_400_and_the_server_keeps_serving(server):
    chat, comp = "/v1/chat/completions", "/v1/completions"
    long_prompt = "word " * 700
    bad = [(chat, b"not json", "not JSON"), (chat, b"[1]", "JSON object"),
           (chat, b'{"messages": []}', "messages must be a non-empty list"),
           (chat, b'{"messages": [{"role": "tool", "content": "x"}]}', "role 'tool'"),
           (chat, b'{"messages": [{"role": "user", "content": "x"}], "temperature": 5}', "temperature"),
           (chat, b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}', "max_tokens"),
           (chat, b'{"messages": [{"role": "user", "content": "x"}], "n": 2}', "n=2"),
           (chat, b'{"messages": [{"role": "user", "content": "x"}], "frobnicate": 1}', "unknown field"),
           (chat, b'{"messages": [{"role": "user", "content": "x"}], "stop": [""]}', "stop"),
           (comp, b'{"prompt": ""}', "prompt"), (comp, b'{"prompt": [1, 99999]}', "outside the vocabulary"),
           (comp, json.dumps({"prompt": long_prompt}).encode(), "context is 512"),
           (comp, b'{"prompt": "x", "max_tokens": 600}', "max_tokens 600"),
           (f"/v2/models/{NAME}/generate", b'{"text_input": 3}', "text_input"),
           (f"/v2/models/{NAME}/generate", b'{"text_input": "x", "parameters": {"beam": 2}}', "unknown field")]
    for path, body, words in bad:
        status, _, raw = server.post(path, body)
        assert status == 400, (body, raw)
        answer = json.loads(raw)
        message = answer["error"]["message"] if isinstance(answer["error"], dict) else answer["error"]
        assert words in message, (body, message)
    status, _, raw = server.post(chat, b'{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}')
    assert status == 404 and "does not exist" in json.loads(raw)["error"]["message"]
    assert client(server).completions.create(model=NAME, prompt="ok", max_tokens=2).usage.completion_tokens >= 1


def test_overload_is_503_with_retry_after_at_once_and_the_counts_add_up(lm_bundle):
    server = Server(lm_bundle, "--threads", "1", "--max-seqs", "1", "--queue", "2")

    async def load():
        import aiohttp

        body = json.dumps(dict(LONG, max_tokens=100)).encode()
        out = []
        async with aiohttp.ClientSession() as session:
            async def one():
                start = time.perf_counter()
                async with session.post(server.url + "/v1/chat/completions", data=body) as r:
                    answer = await r.json()
                    out.append((r.status, time.perf_counter() - start, r.headers.get("Retry-After"), answer))
            await asyncio.gather(*(one() for _ in range(12)))
        return out
    try:
        results = asyncio.run(load())
        m = server.metrics()
    finally:
        server.stop()
    codes = [s for s, *_ in results]
    assert set(codes) == {200, 503}, codes
    assert codes.count(200) >= 2  # the queue's two (one of them may have started before the rest arrived)
    refused = [r for r in results if r[0] == 503]
    assert all(r[2] == "1" and "overloaded" in r[3]["error"]["message"] for r in refused)
    assert max(r[1] for r in refused) < 0.5  # refused at once, not after waiting
    completions = sum(r[3]["usage"]["completion_tokens"] for r in results if r[0] == 200)
    assert total(m, "edgekit_lm_requests_total") == 12
    assert total(m, "edgekit_lm_requests_total", code="503") == len(refused) == \
        total(m, "edgekit_lm_rejections_total")
    assert total(m, "edgekit_lm_generation_tokens_total") == completions
    assert total(m, "edgekit_lm_sequences_finished_total") == codes.count(200) == \
        total(m, "edgekit_lm_prefix_cache_queries_total")
    assert total(m, "edgekit_lm_time_to_first_token_seconds_count") == codes.count(200)


def test_sigterm_lets_admitted_streams_finish(lm_bundle):
    server = Server(lm_bundle, "--threads", "1", "--max-seqs", "2")
    streams = [_stream_lines(server.port, LONG) for _ in range(6)]
    for _, lines in streams[:2]:
        while not lines.readline().startswith(b"data: {"):
            pass
    server.proc.send_signal(signal.SIGTERM)
    late = server.post("/v1/completions", b'{"prompt": "x", "max_tokens": 2}')
    ends = []
    for sock, lines in streams:
        data = b"".join(lines.readlines())
        ends.append(b"data: [DONE]" in data and data.endswith(b"0\r\n\r\n"))  # the last chunk, then the end
        lines.close()
        sock.close()
    code = server.proc.wait(timeout=30)
    err = server.proc.stderr.read()
    assert late[0] == 503 and {k.lower(): v for k, v in late[1].items()}.get("retry-after") == "1"
    assert all(ends) and code == 0, (ends, err)  # every admitted stream ran to its end, then the server exited
    assert re.search(r"drained: 6 request\(s\) admitted before the signal, answered: 6 with 200", err), err


def test_lm_options_are_refused_on_the_other_kind_of_bundle(lm_bundle):
    r = subprocess.run([sys.executable, "-c", "from edgekit.cli.main import main; main()", "serve", str(lm_bundle),
                        "--max-batch", "4"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--max-batch does not apply to an LM bundle" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_lm_server_never_imports_torch_or_tensorflow(lm_bundle):
    code = ("import sys; from edgekit.serve.lm_app import LmApp; a = LmApp(sys.argv[1]); a.close(); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(lm_bundle)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_ray_serve_deployment_of_an_lm_bundle(lm_bundle):
    with ray_deployment(lm_bundle, "replicas=2, max_seqs=2, threads=1") as (port, state):
        assert state["replicas"] == 2 and "HEALTHY" in state["status"]
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        answers = {c.completions.create(model=NAME, prompt="The list of", max_tokens=10, temperature=0)
                   .choices[0].text for _ in range(4)}
        assert len(answers) == 1 and answers.pop()  # both replicas answer greedily alike
        chunks = list(c.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}],
                                                max_tokens=6, temperature=0, stream=True))
        assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=10) as r:
            assert r.status == 200
