"""``App``: an ASGI app (Starlette) that serves one bundle over the KServe v2 protocol, with the dynamic
batcher, the response cache, backpressure and Prometheus metrics. Mount it in your own app or run it with
``edgekit serve`` (uvicorn).
"""
from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from .. import __version__
from ..core.errors import UsageError
from .batcher import Batcher, DeadlineExceeded, QueueFull
from .cache import ResponseCache, cache_key
from .drain import Draining
from .protocol import HEADER_LENGTH, BadRequest, decode, encode

EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
INLINE_BELOW_MS = 0.3  # one session whose largest batch runs faster than this runs on the event loop


def _import_starlette():
    import importlib.util

    for name in ("starlette", "uvicorn", "prometheus_client"):
        if importlib.util.find_spec(name) is None:
            raise UsageError(f"serving needs the serve extra ({name} is not installed): pip install 'edgekit[serve]'")


class App(Draining):
    """Serve ``bundle`` (a folder with manifest.json). Every option is the CLI's (``edgekit serve --help``)."""

    def __init__(self, bundle: str | Path, *, runtime: str = "auto", device: str = "auto", max_batch: int = 32,
                 max_delay_ms: float = 2.0, queue: int = 256, timeout_ms: float = 1000.0, cache_mb: float = 64.0,
                 cache_ttl_s: float | None = None, workers: int = 1, threads: int | None = None,
                 max_body_mb: float = 64.0, retry_after_s: int = 1):
        _import_starlette()
        from starlette.applications import Starlette
        from starlette.routing import Route

        from .metrics import Metrics
        from .model import open_model

        if max_batch < 1 or queue < 1 or workers < 1 or timeout_ms <= 0 or cache_mb < 0:
            raise UsageError("max_batch, queue and workers must be at least 1, timeout_ms above 0, cache_mb >= 0")
        self.model = open_model(bundle, runtime=runtime, device=device, workers=workers, threads=threads,
                                max_batch=max_batch)
        self.metrics = Metrics(self.model.name)
        self.metrics.info.info({"file": self.model.file.name, "runtime": self.model.runtime,
                                "execution_provider": self.model.provider, "device": self.model.device,
                                "precision": self.model.precision, "sha256": self.model.sha256})
        self.batcher = Batcher(self.model.runners, max_batch=max_batch, max_delay_s=max_delay_ms / 1000.0,
                               queue=queue, batchable=self.model.batchable, on_batch=self.metrics.batch,
                               inline=self.model.largest_batch_ms < INLINE_BELOW_MS)
        self.cache = ResponseCache(int(cache_mb * 2 ** 20), cache_ttl_s, on_event=self.metrics.cache_event)
        self.timeout_s = timeout_ms / 1000.0
        self.max_body = int(max_body_mb * 2 ** 20)
        self.retry_after = str(int(retry_after_s))
        self._init_drain()
        self.ready = True  # the sessions were warmed up at the smallest and the largest batch
        name = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        routes = [Route("/v2", self.server_metadata), Route("/v2/health/live", self.live),
                  Route("/v2/health/ready", self.ready_check), Route("/metrics", self.metrics_page)]
        for base in (name, versioned):
            routes += [Route(base, self.model_metadata), Route(base + "/ready", self.model_ready),
                       Route(base + "/config", self.model_config), Route(base + "/stats", self.model_stats),
                       Route(base + "/infer", self.infer, methods=["POST"])]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)
        self._infer_paths = {f"/v2/models/{self.model.name}/infer", f"/v2/models/{self.model.name}/versions/1/infer"}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path", "")
            if root and path.startswith(root):
                path = path[len(root):]
            if path in self._infer_paths:
                await self._fast_infer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    # lifecycle -----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        yield
        await self.batcher.close()

    @property
    def idle(self) -> bool:
        return self.active == 0 and self.batcher.idle

    # small endpoints -----------------------------------------------------------------------------
    async def server_metadata(self, request):
        return _json({"name": "edgekit", "version": __version__, "extensions": EXTENSIONS})

    async def live(self, request):
        return _json({"live": True})

    async def ready_check(self, request):
        ok = self.ready and not self.draining
        return _json({"ready": ok}, 200 if ok else 503)

    async def model_metadata(self, request):
        return self._known(request) or _json(self.model.metadata())

    async def model_ready(self, request):
        ok = self.ready and not self.draining
        return self._known(request) or _json({"name": self.model.name, "ready": ok}, 200 if ok else 503)

    async def model_config(self, request):
        from .triton import model_config

        return self._known(request) or _json(model_config(self.model, self.batcher.max_batch,
                                                          self.batcher.max_delay_s * 1e6, self.batcher.capacity,
                                                          int(self.timeout_s * 1e6), len(self.model.runners)))

    async def model_stats(self, request):
        c = self.cache.stats
        return self._known(request) or _json({"model_stats": [{
            "name": self.model.name, "version": "1", "queue_depth": self.batcher.depth,
            "cache": {"hits": c.hits, "misses": c.misses, "shared": c.shared, "evictions": c.evictions,
                      "bytes": self.cache.bytes, "entries": len(self.cache)}}]})

    async def metrics_page(self, request):
        from starlette.responses import Response

        self.metrics.depth.labels(self.model.name).set(self.batcher.depth)
        return Response(self.metrics.exposition(), media_type="text/plain; version=0.0.4")

    def _known(self, request):
        name = request.path_params["name"]
        version = request.path_params.get("version")
        if name != self.model.name or version not in (None, "1"):
            what = f"model {name!r}" + (f" version {version!r}" if version else "")
            return _json({"error": f"unknown {what}; this server serves {self.model.name!r} version 1"}, 404)
        return None

    # inference -----------------------------------------------------------------------------------
    async def infer(self, request):
        """The Starlette route: unknown models and versions (known ones take the fast path in ``__call__``)."""
        unknown = self._known(request)
        if unknown is not None:
            self.metrics.answered(404)
            return unknown
        from starlette.responses import Response

        status, headers, payload = await self._infer(request.headers.get, request.stream())
        return Response(payload, status_code=status, headers=dict(headers))

    async def _fast_infer(self, scope, receive, send) -> None:
        """POST .../infer for the served model straight on ASGI: no routing or request objects per call."""
        wanted = {b"content-length": None, b"content-encoding": None, HEADER_LENGTH.encode(): None}
        for key, value in scope["headers"]:
            if key in wanted:
                wanted[key] = value.decode("latin-1")

        async def chunks():
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BadRequest("the client went away before its request body arrived")
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return
        status, headers, payload = await self._infer(lambda k: wanted.get(k.encode()), chunks())
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in headers] +
                               [(b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def _infer(self, header, body) -> tuple[int, list[tuple[str, str]], bytes]:
        """One inference request, transport-neutral: ``header(name)`` reads a lower-case request header and
        ``body`` yields the body's chunks. Answers (status, headers, payload)."""
        start = time.monotonic()
        if self.draining:
            return self._reject(503, "shutting_down", "the server is shutting down; retry on another replica")
        length = header("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return self._error(400, f"the request body of {length} bytes is over the limit of {self.max_body}")
        try:
            self.batcher.admit()  # before the body is read: a full queue costs the server nothing
        except QueueFull:
            return self._reject(503, "queue_full", f"the queue is full ({self.batcher.capacity} requests); "
                                                   f"retry after {self.retry_after} s")
        self.active += 1
        status = 500
        try:
            status, headers, payload = await self._admitted(header, body, start)
            return status, headers, payload
        finally:
            self._answered(start, status)

    async def _admitted(self, header, body, start: float):
        owned = True  # this handler holds the queue slot until the batcher takes it over

        async def compute():
            nonlocal owned
            owned = False
            return await self.batcher.submit(parsed.inputs, deadline)
        try:
            try:
                raw = _decompress(await _read(body, self.max_body), header("content-encoding"))
                parsed = decode(raw, header(HEADER_LENGTH), self.model.iospec)
            except BadRequest as exc:
                return self._error(exc.status, str(exc))
            except Exception as exc:  # a body the decoder's checks did not foresee: still the client's
                return self._error(400, f"malformed inference request ({type(exc).__name__}: {str(exc)[:200]})")
            samples = max((a.shape[0] if a.ndim else 1) for a in parsed.inputs.values())
            if self.model.batchable and samples > self.batcher.max_batch:
                return self._error(400, f"a batch of {samples} is over this server's --max-batch "
                                        f"{self.batcher.max_batch}; split the request")
            deadline = start + self.timeout_s
            try:
                if self.cache.enabled:
                    outputs, _ = await self.cache.lookup(cache_key(self.model.sha256, parsed.inputs), compute)
                else:
                    outputs = await compute()
            except DeadlineExceeded:
                self.metrics.rejected("deadline")
                return self._error(504, f"the request waited past its {self.timeout_s * 1000:g} ms deadline; "
                                        "it was not run", start)
            except Exception as exc:  # the runtime failed on this batch; the server keeps serving
                return self._error(500, f"inference failed: {type(exc).__name__}: {str(exc)[:300]}", start)
        finally:
            if owned:  # a bad body, a cache hit or shared result, or a cancelled handler: give the slot back
                self.batcher.release()
        payload, json_length = encode(parsed, outputs, self.model.name)
        self.metrics.answered(200, time.monotonic() - start)
        if json_length is None:
            return 200, [("content-type", "application/json")], payload
        return 200, [("content-type", "application/octet-stream"), (HEADER_LENGTH, str(json_length))], payload

    def _error(self, code: int, message: str, start: float | None = None):
        self.metrics.answered(code, None if start is None else time.monotonic() - start)
        return code, [("content-type", "application/json")], json.dumps({"error": message}).encode()

    def _reject(self, code: int, reason: str, message: str):
        self.metrics.rejected(reason)
        status, headers, payload = self._error(code, message)
        return status, headers + [("retry-after", self.retry_after)], payload


def _decompress(raw: bytes, encoding: str | None) -> bytes:
    """The body as sent by tritonclient's ``request_compression_algorithm`` (gzip or deflate)."""
    import zlib

    if not encoding or encoding == "identity":
        return raw
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none", 415)
    try:
        return zlib.decompress(raw, 31 if encoding == "gzip" else 15)
    except zlib.error as exc:
        raise BadRequest(f"the {encoding} body cannot be decompressed ({exc})") from None


async def _read(chunks, limit: int) -> bytes:
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the request body is over the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _json(body, status: int = 200, headers: dict | None = None):
    from starlette.responses import JSONResponse

    return JSONResponse(body, status_code=status, headers=headers)
