"""Request bodies of the OpenAI-compatible API and of KServe v2's generate extension, checked and turned into one
``Generation``; and the response bodies and stream chunks each protocol answers with.

Every field the server does not honour is refused with a 400 that names it (a sampling option silently ignored
would change the answer the client asked for); OpenAI's defaults apply where the client sends nothing:
temperature 1, top_p 1, ``max_tokens`` up to the context for chat and 16 for completions.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from .lm_engine import Sampling


class BadBody(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.status = status


@dataclass(frozen=True)
class Generation:
    """What to generate: a chat (``messages``), a text prompt, or token ids, and how."""
    kind: str  # "chat", "completion" or "generate"
    messages: tuple | None
    text: str | None
    ids: tuple[int, ...] | None
    max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    model: str | None

    def sampling(self, max_tokens: int) -> Sampling:
        return Sampling(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                        seed=self.seed, stop=self.stop)


COMMON = {"model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream", "stream_options", "n",
          "user", "metadata", "store", "logprobs", "presence_penalty", "frequency_penalty", "logit_bias",
          "service_tier"}
CHAT = COMMON | {"messages", "max_completion_tokens", "response_format", "parallel_tool_calls", "top_logprobs"}
COMPLETION = COMMON | {"prompt", "echo", "best_of", "suffix"}
NEUTRAL = {"n": 1, "logprobs": (None, False, 0), "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": ({},),
           "echo": False, "best_of": 1, "suffix": (None, ""), "top_logprobs": (None, 0),
           "response_format": ({"type": "text"},), "parallel_tool_calls": (None, True, False)}


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadBody(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadBody("the body must be a JSON object")
    return body


def _number(body: dict, key: str, default, lo: float, hi: float, kind=float):
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise BadBody(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}", key)
    if not lo <= value <= hi:
        raise BadBody(f"{key} must be between {lo:g} and {hi:g}, got {value!r}", key)
    return kind(value)


def _stop(value) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
        raise BadBody("stop must be a non-empty string or a list of up to 4 of them", "stop")
    return tuple(stops)


def _options(body: dict, allowed: set[str], kind: str) -> dict:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadBody(f"unknown field {unknown[0]!r} (this server takes: {', '.join(sorted(allowed))})", unknown[0])
    for key, fine in NEUTRAL.items():
        if key in body and body[key] not in (fine if isinstance(fine, tuple) else (fine,)):
            raise BadBody(f"{key}={body[key]!r} is not supported by this server", key)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise BadBody(f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
    if kind == "completion" and max_tokens is None:
        max_tokens = 16  # OpenAI's default for completions
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadBody(f"stream must be true or false, got {stream!r}", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
        raise BadBody("stream_options takes only include_usage", "stream_options")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadBody(f"seed must be an integer, got {seed!r}", "seed")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadBody("model must be a string", "model")
    return dict(max_tokens=max_tokens, temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                top_p=_number(body, "top_p", 1.0, 1e-9, 1.0), top_k=_number(body, "top_k", 0, 0, 1 << 30, int),
                seed=seed, stop=_stop(body.get("stop")), stream=stream,
                include_usage=bool(opts.get("include_usage", False)), model=model)


def _content(message: dict, i: int) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and
                                         isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise BadBody(f"messages[{i}].content must be a string or a list of text parts", "messages")


def parse_chat(body: dict) -> Generation:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadBody("messages must be a non-empty list", "messages")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise BadBody(f"messages[{i}] must be an object with a role", "messages")
        if m["role"] not in ("system", "developer", "user", "assistant"):
            raise BadBody(f"messages[{i}].role {m['role']!r} is not supported (system, user, assistant)",
                          "messages")
        clean.append({"role": "system" if m["role"] == "developer" else m["role"], "content": _content(m, i)})
    return Generation(kind="chat", messages=tuple(clean), text=None, ids=None,
                      **_options(body, CHAT, "chat"))


def parse_completion(body: dict) -> Generation:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    text, ids = None, None
    if isinstance(prompt, str) and prompt:
        text = prompt
    elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        ids = tuple(prompt)
    else:
        raise BadBody("prompt must be a non-empty string or a list of token ids (one prompt per request)", "prompt")
    return Generation(kind="completion", messages=None, text=text, ids=ids,
                      **_options(body, COMPLETION, "completion"))


def parse_generate(body: dict, stream: bool) -> Generation:
    """KServe v2 / Triton generate: ``text_input`` and ``parameters`` (the same sampling names)."""
    unknown = sorted(set(body) - {"text_input", "parameters", "id"})
    if unknown:
        raise BadBody(f"unknown field {unknown[0]!r} (generate takes text_input, parameters and id)", unknown[0])
    text = body.get("text_input")
    if not isinstance(text, str) or not text:
        raise BadBody("text_input must be a non-empty string", "text_input")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadBody("parameters must be an object", "parameters")
    allowed = {"max_tokens", "temperature", "top_p", "top_k", "seed", "stop"}
    opts = _options(params, allowed, "generate")
    opts["stream"], opts["max_tokens"] = stream, opts["max_tokens"] or 16
    return Generation(kind="generate", messages=None, text=text, ids=None, **opts)


# answers -----------------------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt: int, completion: int, cached: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


def openai_answer(kind: str, rid: str, model: str, text: str, finish: str, use: dict) -> dict:
    created = int(time.time())
    if kind == "chat":
        return {"id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": finish}], "usage": use}
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}], "usage": use}


def openai_chunk(kind: str, rid: str, model: str, text: str | None, finish: str | None, *, first: bool = False,
                 use: dict | None = None) -> dict:
    created = int(time.time())
    if use is not None:  # the usage chunk: no choices
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": use}
    if kind == "chat":
        delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
        return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]}


def openai_error(message: str, status: int, param: str | None = None) -> dict:
    kind = {400: "invalid_request_error", 404: "not_found_error", 503: "server_overloaded"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}
