"""``LmApp``: an ASGI app (Starlette) that serves an LM bundle's GGUF file with continuous batching and a prefix
cache, over the OpenAI-compatible API (``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``) and KServe
v2's generate extension (``/v2/models/{name}/generate`` and ``/generate_stream``), with KServe's health, readiness
and metadata endpoints and Prometheus metrics. Run it with ``edgekit serve BUNDLE`` (uvicorn) or ``--ray``.

A request is refused with 503 and Retry-After before its body is read when the waiting queue or the tokens in
flight are at their caps, or the server is draining; a streaming client that goes away cancels its sequence at the
next token, and so does one waiting for a whole answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

from .. import __version__
from ..core.errors import UsageError
from .drain import Draining
from .lm_protocol import (BadBody, Generation, new_id, openai_answer, openai_chunk, openai_error, parse_chat,
                          parse_completion, parse_generate, parse_json, usage)
from .lm_scheduler import Overloaded


class LmApp(Draining):
    """Serve the LM bundle ``bundle``. Every option is the CLI's (``edgekit serve --help``)."""

    def __init__(self, bundle: str | Path, *, file: str | None = None, max_seqs: int = 8,
                 max_batch_tokens: int = 512, context: int | None = None, threads: int | None = None,
                 queue: int = 64, max_tokens_in_flight: int | None = None, prefix_cache: bool = True,
                 max_body_mb: float = 4.0, retry_after_s: int = 1):
        from .app import _import_starlette

        _import_starlette()
        from starlette.applications import Starlette
        from starlette.routing import Route

        from .lm_metrics import LmMetrics
        from .lm_model import open_lm
        from .lm_scheduler import Scheduler

        if max_seqs < 1 or queue < 1 or max_batch_tokens < 1:
            raise UsageError("--max-seqs, --queue and --max-batch-tokens must be at least 1")
        self.lm = open_lm(bundle, file=file, max_seqs=max_seqs, context=context, threads=threads,
                          batch_tokens=max_batch_tokens, prefix_cache=prefix_cache)
        engine = self.lm.engine
        self.name = self.lm.name
        self.metrics = LmMetrics(self.name)
        self.metrics.info.info({"file": self.lm.entry["folder"], "runtime": engine.runtime,
                                "precision": str(self.lm.entry.get("precision", "")),
                                "sha256": str(self.lm.entry.get("sha256", "")), "context": str(self.lm.context),
                                "max_seqs": str(max_seqs), "prefix_cache": str(prefix_cache).lower()})
        cap = max_tokens_in_flight or 4 * engine.capacity  # the running batch's cells, and three times as many waiting
        self.scheduler = Scheduler(engine, queue=queue, max_tokens=cap, metrics=self.metrics,
                                   stop_ids=self.lm.stop_ids)
        self.formatter = None
        if self.lm.chat_template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self.formatter = Jinja2ChatFormatter(self.lm.chat_template, eos_token=engine.token_text(engine.eos_id),
                                                 bos_token=engine.token_text(engine.bos_id))
        self.max_body = int(max_body_mb * 2 ** 20)
        self.retry_after = str(int(retry_after_s))
        self._init_drain()
        base = "/v2/models/{name}"
        routes = [Route("/v1/chat/completions", self.chat, methods=["POST"]),
                  Route("/v1/completions", self.completions, methods=["POST"]),
                  Route("/v1/models", self.models), Route("/v2", self.server_metadata),
                  Route("/v2/health/live", self.live), Route("/v2/health/ready", self.ready_check),
                  Route("/metrics", self.metrics_page)]
        for prefix in (base, base + "/versions/{version}"):
            routes += [Route(prefix, self.model_metadata), Route(prefix + "/ready", self.model_ready),
                       Route(prefix + "/generate", self.generate, methods=["POST"]),
                       Route(prefix + "/generate_stream", self.generate_stream, methods=["POST"])]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and (self.draining or self.scheduler.full()):
            path = scope["path"]
            if path.startswith(("/v1/chat/completions", "/v1/completions")) or path.endswith(
                    ("/generate", "/generate_stream")):  # refused on the request line, before any routing
                await self._refuse(path.startswith("/v1/"), send)
                return
        await self.app(scope, receive, send)

    async def _refuse(self, openai: bool, send) -> None:
        busy = None if self.draining else self.scheduler.full()
        if busy is None:
            reason, message = "shutting_down", "the server is shutting down; retry on another replica"
        else:
            reason, message = busy.reason, f"overloaded: {busy}; retry after {self.retry_after} s"
        self.metrics.rejected(reason)
        self.metrics.answered(503)
        body = json.dumps(openai_error(message, 503) if openai else {"error": message}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"), (b"retry-after", self.retry_after.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    # lifecycle ---------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def close(self) -> None:
        self.scheduler.close()
        self.lm.engine.close()

    @property
    def idle(self) -> bool:
        return self.active == 0

    # small endpoints ---------------------------------------------------------------------------------
    async def server_metadata(self, request):
        return _json({"name": "edgekit", "version": __version__, "extensions": ["generate"]})

    async def live(self, request):
        return _json({"live": True})

    async def ready_check(self, request):
        return _json({"ready": not self.draining}, 503 if self.draining else 200)

    async def model_metadata(self, request):
        return self._known(request) or _json(self.lm.metadata())

    async def model_ready(self, request):
        ok = not self.draining
        return self._known(request) or _json({"name": self.name, "ready": ok}, 200 if ok else 503)

    async def models(self, request):
        return _json({"object": "list", "data": [{"id": self.name, "object": "model", "created": 0,
                                                  "owned_by": "edgekit"}]})

    async def metrics_page(self, request):
        from starlette.responses import Response

        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    def _known(self, request):
        name, version = request.path_params["name"], request.path_params.get("version")
        if name != self.name or version not in (None, "1"):
            return _json({"error": f"unknown model {name!r}; this server serves {self.name!r} version 1"}, 404)
        return None

    # generation --------------------------------------------------------------------------------------
    async def chat(self, request):
        return await self._serve(request, "chat")

    async def completions(self, request):
        return await self._serve(request, "completion")

    async def generate(self, request):
        return self._known(request) or await self._serve(request, "generate")

    async def generate_stream(self, request):
        return self._known(request) or await self._serve(request, "generate_stream")

    async def _serve(self, request, kind: str):
        openai = kind in ("chat", "completion")  # a draining or full server answered in __call__ already
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self.metrics.answered(400)
            return self._error(openai, 400, f"the body of {length} bytes is over the limit of {self.max_body}")
        self.active += 1
        start, status, streaming = time.monotonic(), 500, False
        try:
            try:
                body = parse_json(await request.body())
                gen = (parse_chat(body) if kind == "chat" else parse_completion(body) if kind == "completion"
                       else parse_generate(body, kind == "generate_stream"))
                if gen.model is not None and gen.model != self.name:
                    raise BadBody(f"the model {gen.model!r} does not exist; this server serves {self.name!r}",
                                  "model", 404)
                ids = self._prompt(gen)
                max_tokens = self._max_tokens(gen, len(ids))
                req = self.scheduler.submit(ids, gen.sampling(max_tokens), asyncio.get_running_loop())
            except BadBody as exc:
                status = exc.status
                return self._error(openai, exc.status, str(exc), exc.param)
            except Overloaded as exc:
                status = 503
                return self._reject(openai, exc.reason, f"overloaded: {exc}; retry after {self.retry_after} s")
            rid = new_id(gen.kind) if openai else str(body.get("id") or new_id("generate"))
            if gen.stream:
                streaming, status = True, 200
                return EventStream(self._stream(req, gen, rid, openai), lambda: self._cancel(req),
                                   lambda status: self._done(start, status))
            response = await self._whole(request, req, gen, rid, openai)
            status = response.status_code
            return response
        finally:
            if not streaming:
                self._done(start, status)

    def _prompt(self, gen: Generation) -> list[int]:
        engine = self.lm.engine
        if gen.ids is not None:
            bad = [t for t in gen.ids if not 0 <= t < engine.n_vocab]
            if bad:
                raise BadBody(f"token id {bad[0]} is outside the vocabulary (0..{engine.n_vocab - 1})", "prompt")
            return list(gen.ids)
        text, add_bos = gen.text, None
        if gen.kind == "chat":
            if self.formatter is None:
                raise BadBody("this model has no chat template; send a prompt to /v1/completions", "messages")
            try:
                text = self.formatter(messages=[dict(m) for m in gen.messages]).prompt
            except Exception as exc:  # noqa: BLE001 - the template's own raise_exception, or a render error
                raise BadBody(f"the chat template refused these messages: {str(exc)[:200]}", "messages") from None
            add_bos = False  # the template writes BOS where the model wants one (as transformers and llama.cpp)
        return engine.tokenize(text, add_bos=add_bos)

    def _max_tokens(self, gen: Generation, prompt: int) -> int:
        context = self.lm.context
        room = context - prompt
        if room < 1:
            raise BadBody(f"the prompt is {prompt} tokens; this server's context is {context} tokens", "messages"
                          if gen.kind == "chat" else "prompt")
        if gen.max_tokens is None:
            return room
        if gen.max_tokens > room:
            raise BadBody(f"the context is {context} tokens, and {prompt} prompt tokens plus max_tokens "
                          f"{gen.max_tokens} would need {prompt + gen.max_tokens}", "max_tokens")
        return gen.max_tokens

    async def _whole(self, request, req, gen, rid, openai):
        watch = asyncio.ensure_future(_disconnected(request.receive))
        parts, end = [], None
        try:
            async for event in _while_connected(req.events(), watch):
                if event[0] == "text":
                    parts.append(event[1])
                else:
                    end = event
        finally:
            watch.cancel()
        if end is None:  # the client went away: its sequence stops at the next token
            self._cancel(req)
            return _json({"error": "the client closed the request"}, 499)
        if end[0] == "error":
            return self._error(openai, 500, f"generation failed: {end[1]}")
        text, use = "".join(parts), usage(len(req.prompt), req.completion_tokens, req.cached_tokens)
        if openai:
            return _json(openai_answer(gen.kind, rid, self.name, text, end[1], use))
        return _json({"id": rid, "model_name": self.name, "model_version": "1", "text_output": text,
                      "finish_reason": end[1], "usage": use})

    async def _stream(self, req, gen, rid, openai):
        first = True
        async for event in req.events():
            if event[0] == "text":
                chunk = (openai_chunk(gen.kind, rid, self.name, event[1], None, first=first) if openai else
                         {"id": rid, "model_name": self.name, "model_version": "1", "text_output": event[1]})
                first = False
            elif event[0] == "error":
                yield _sse(openai_error(f"generation failed: {event[1]}", 500) if openai else
                           {"error": f"generation failed: {event[1]}"})
                break
            else:
                use = usage(len(req.prompt), req.completion_tokens, req.cached_tokens)
                if openai and first and gen.kind == "chat":
                    yield _sse(openai_chunk(gen.kind, rid, self.name, "", None, first=True))
                chunk = (openai_chunk(gen.kind, rid, self.name, None, event[1]) if openai else
                         {"id": rid, "model_name": self.name, "model_version": "1", "text_output": "",
                          "finish_reason": event[1], "usage": use})
                yield _sse(chunk)
                if openai and gen.include_usage:
                    yield _sse(openai_chunk(gen.kind, rid, self.name, None, None, use=use))
                break
            yield _sse(chunk)
        if openai:
            yield b"data: [DONE]\n\n"

    def _cancel(self, req) -> None:
        if req.finish_reason is None:
            self.scheduler.cancel(req)

    def _done(self, start: float, status: int = 200) -> None:
        self._answered(start, status)
        self.metrics.answered(status)

    def _error(self, openai: bool, status: int, message: str, param: str | None = None):
        body = openai_error(message, status, param) if openai else {"error": message}
        return _json(body, status)

    def _reject(self, openai: bool, reason: str, message: str):
        """503 for a request whose tokens would pass the cap (counted as answered when its handler ends)."""
        self.metrics.rejected(reason)
        response = self._error(openai, 503, message)
        response.headers["Retry-After"] = self.retry_after
        return response


class EventStream:
    """A server-sent-events response (an ASGI app) that stops and cancels its sequence when the client goes away,
    and tells the app when it is over."""

    def __init__(self, chunks, cancel, done):
        self.chunks, self.cancel, self.done = chunks, cancel, done

    async def __call__(self, scope, receive, send):
        watch = asyncio.ensure_future(_disconnected(receive))
        broken = False
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                                    (b"x-accel-buffering", b"no")]})
            async for chunk in _while_connected(self.chunks, watch):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not watch.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the connection broke while writing (uvicorn's ClientDisconnected)
            broken = True
        finally:
            gone = broken or watch.done()
            watch.cancel()
            self.cancel()
            await self.chunks.aclose()
            self.done(499 if gone else 200)


async def _while_connected(events, watch):
    """The items of ``events`` until ``watch`` (a disconnect) completes, whichever comes first."""
    it = events.__aiter__()
    while True:
        item = asyncio.ensure_future(it.__anext__())
        await asyncio.wait({item, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not item.done():
            item.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await item  # the generator is idle again before anyone closes it
            return
        try:
            yield item.result()
        except StopAsyncIteration:
            return


async def _disconnected(receive) -> None:
    """Returns when the client has gone away (the request body was read before)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _sse(body: dict) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _json(body, status: int = 200):
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status)
