"""The scheduler of a served LM: admission, the engine's thread and each sequence's stream of text.

Requests wait in a bounded queue; the engine's thread moves them into free slots at a token boundary and steps the
running batch until none is left (see lm_engine). Each sequence's tokens become text incrementally (UTF-8 split
across tokens is held back, and so is text that may still turn into a stop string) and reach the request's
asyncio queue with one ``call_soon_threadsafe`` per step. A cancelled sequence (its client went away) leaves the
batch at the next token. Backpressure counts sequences and tokens: at most ``queue`` waiting sequences and
``max_tokens`` tokens (prompt plus the most it may generate) admitted at once.
"""
from __future__ import annotations

import codecs
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .lm_engine import EngineSeq, Sampling


class Overloaded(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TextStream:
    """Tokens' bytes to text deltas: incomplete UTF-8 waits for its next bytes, and the tail of the text that could
    still become a stop string waits until it cannot; a stop string ends the text before it."""

    def __init__(self, stops: tuple[str, ...]):
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.sent = 0

    def feed(self, data: bytes) -> tuple[str, bool]:
        start = max(0, self.sent - max((len(s) for s in self.stops), default=0))
        self.text += self.decoder.decode(data)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.text = self.text[:min(hits)]
            return self._take(len(self.text)), True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text) - self.sent), hold, -1):
                if self.text.endswith(s[:k]):
                    hold = k
                    break
        return self._take(len(self.text) - hold), False

    def flush(self) -> str:
        self.text += self.decoder.decode(b"", final=True)
        return self._take(len(self.text))

    def _take(self, end: int) -> str:
        delta, self.sent = self.text[self.sent:end], max(self.sent, end)
        return delta


_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    """One admitted sequence, as its HTTP handler sees it: ``events`` yields ("text", delta) until ("end", reason)
    or ("error", message)."""
    prompt: list[int]
    sampling: Sampling
    loop: object
    queue: object
    number: int = field(default_factory=lambda: next(_ids))
    seq: EngineSeq | None = None
    stream: TextStream | None = None
    submitted: float = field(default_factory=time.monotonic)
    first_at: float | None = None
    last_at: float | None = None
    completion_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False

    @property
    def cost(self) -> int:
        return len(self.prompt) + self.sampling.max_tokens

    @property
    def cached_tokens(self) -> int:
        return self.seq.reused if self.seq is not None else 0

    async def events(self):
        """The sequence's events; text that arrived while the reader was busy comes as one delta (a client that
        lags behind the engine gets fewer, longer chunks instead of a growing backlog)."""
        held = None  # the event that ended a run of text, yielded after it
        while True:
            event, held = held or await self.queue.get(), None
            if event[0] == "text":
                parts = [event[1]]
                while not self.queue.empty():
                    more = self.queue.get_nowait()
                    if more[0] != "text":
                        held = more
                        break
                    parts.append(more[1])
                event = ("text", "".join(parts))
            yield event
            if event[0] in ("end", "error"):
                return


class Scheduler:
    def __init__(self, engine, *, queue: int, max_tokens: int, metrics, stop_ids: tuple[int, ...] = ()):
        self.engine = engine
        self.queue_limit = queue
        self.max_tokens = max_tokens
        self.metrics = metrics
        self.stop_ids = frozenset(stop_ids)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.tokens_admitted = 0
        self._cond = threading.Condition()
        self._closed = False
        self._outbox: list[tuple[Request, tuple]] = []  # events of the current step, for the event loops
        self._window: deque[tuple[float, int]] = deque()  # (time, tokens) of the last steps, for tokens/s
        self._thread = threading.Thread(target=self._loop, name="edgekit-lm-engine", daemon=True)
        self._thread.start()

    # admission (event loop) --------------------------------------------------------------------------
    def full(self) -> Overloaded | None:
        """Why a new request cannot be taken now (before its body is read), or None."""
        if len(self.waiting) >= self.queue_limit:
            return Overloaded("queue_full", f"{len(self.waiting)} sequences are waiting (--queue "
                                            f"{self.queue_limit})")
        if self.tokens_admitted >= self.max_tokens:
            return Overloaded("tokens_full", f"{self.tokens_admitted} tokens are in flight (the cap is "
                                             f"{self.max_tokens})")
        return None

    def submit(self, prompt: list[int], sampling: Sampling, loop) -> Request:
        import asyncio

        with self._cond:
            busy = self.full()
            if busy is not None:
                raise busy
            if self.tokens_admitted + len(prompt) + sampling.max_tokens > self.max_tokens:
                raise Overloaded("tokens_full", f"{len(prompt) + sampling.max_tokens} more tokens would pass the "
                                                f"cap of {self.max_tokens} in flight ({self.tokens_admitted} now)")
            req = Request(prompt=prompt, sampling=sampling, loop=loop, queue=asyncio.Queue())
            req.stream = TextStream(sampling.stop)
            self.tokens_admitted += req.cost
            self.waiting.append(req)
            self.metrics.queued(len(self.waiting), len(self.running))
            self._cond.notify()
        return req

    def cancel(self, req: Request) -> None:
        """The client went away: the sequence leaves at the next token (or is never started)."""
        req.cancelled = True
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)

    # the engine's thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._flush()  # what the last step produced, in one wake-up of the event loop
            with self._cond:
                while not self._closed and not self.waiting and not self.running:
                    self._cond.wait()
                if self._closed:
                    for req in list(self.waiting) + self.running:
                        self._end(req, "error", "the server stopped")
                    self._flush()
                    return
                self._admit()
            for req in [r for r in self.running if r.cancelled]:
                self._finish(req, "cancelled")
            if not self.running:
                continue
            try:
                sampled, prompt_read = self.engine.step([r.seq for r in self.running])
            except Exception as exc:  # noqa: BLE001 - the runtime failed: these sequences end, the server goes on
                for req in list(self.running):
                    self._end(req, "error", f"{type(exc).__name__}: {str(exc)[:300]}")
                continue
            now = time.monotonic()
            owner = {id(r.seq): r for r in self.running}
            for seq, token in sampled:
                self._token(owner[id(seq)], token, now)
            self._window.append((now, len(sampled)))
            while self._window and now - self._window[0][0] > 5.0:
                self._window.popleft()
            self.metrics.stepped(prompt_read, self._rate(now), self.engine.cells_held / self.engine.capacity,
                                 len(self.waiting), len(self.running))

    def _rate(self, now: float) -> float:
        if len(self._window) < 2:
            return 0.0
        span = now - self._window[0][0]
        return sum(n for _, n in list(self._window)[1:]) / span if span > 0 else 0.0

    def _admit(self) -> None:
        while self.waiting and self.engine.free_slots:
            req = self.waiting.popleft()
            if req.cancelled:
                self._end(req, "end", "cancelled")
                continue
            req.seq = EngineSeq(prompt=req.prompt, sampling=req.sampling)
            self.engine.start(req.seq)
            self.metrics.prefix(req.seq.reused, len(req.prompt))
            self.running.append(req)

    def _token(self, req: Request, token: int, now: float) -> None:
        if req.first_at is None:
            req.first_at = now
            self.metrics.first_token(now - req.submitted)
        req.last_at = now
        if token in self.stop_ids or self.engine.is_end(token):
            self._finish(req, "stop")
            return
        req.completion_tokens += 1
        self.metrics.generated(1)
        delta, stopped = req.stream.feed(self.engine.piece(token))
        if delta:
            self._send(req, ("text", delta))
        if stopped:
            self._finish(req, "stop")
        elif req.completion_tokens >= req.sampling.max_tokens:
            self._finish(req, "length")

    def _finish(self, req: Request, reason: str) -> None:
        if reason != "cancelled":
            tail = req.stream.flush()
            if tail:
                self._send(req, ("text", tail))
        self._end(req, "end", reason)

    def _end(self, req: Request, kind: str, detail: str) -> None:
        if req.seq is not None:
            self.engine.finish(req.seq)
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)
        req.finish_reason = detail if kind == "end" else "error"
        with self._cond:
            self.tokens_admitted -= req.cost
        if req.first_at is not None and req.completion_tokens > 1:
            self.metrics.per_token((req.last_at - req.first_at) / (req.completion_tokens - 1))
        self.metrics.finished(req.finish_reason)
        self._send(req, (kind, detail))

    def _send(self, req: Request, event) -> None:
        self._outbox.append((req, event))

    def _flush(self) -> None:
        """Hand the outbox to the event loops: one ``call_soon_threadsafe`` (one wake-up) per loop and step, not
        one per token, so the event loop interrupts llama.cpp's threads once a step."""
        if not self._outbox:
            return
        by_loop: dict[int, list] = {}
        for req, event in self._outbox:
            by_loop.setdefault(id(req.loop), []).append((req, event))
        self._outbox = []
        for items in by_loop.values():
            try:
                items[0][0].loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the event loop is gone (shutdown)
                pass


def _deliver(items) -> None:
    for req, event in items:
        req.queue.put_nowait(event)
