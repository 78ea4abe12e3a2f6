"""The dynamic batcher: a bounded queue in front of one or more sessions, each running one batch at a time.

- A free session takes what is queued right now (up to ``max_batch`` samples, requests of the same
  per-sample shape and dtype) and runs it at once when no other batch is running; only while another
  batch is running does it wait up to ``max_delay_s`` for more requests to fill its batch.
- Inputs are stacked on the batch axis and the outputs split back per request.
- A request whose deadline passes before its batch starts is answered with ``DeadlineExceeded`` and never
  run; one whose batch has started gets its result.
- ``admit`` reserves a queue slot before the request body is read: the queue never grows past ``queue``.
- ``inline``: with one session whose largest batch runs in well under a millisecond, batches run on the
  event loop itself; handing them to a thread would cost more than running them.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


@dataclass(eq=False)
class _Item:
    inputs: dict[str, np.ndarray]
    samples: int
    group: tuple
    deadline: float
    enqueued: float
    future: asyncio.Future
    started: bool = False
    dropped: bool = False


@dataclass
class BatchRecord:
    requests: int
    samples: int
    queue_s: list[float] = field(default_factory=list)
    infer_s: float = 0.0


class Batcher:
    """``runners``: one per session (each is called from its own thread, one batch at a time)."""

    def __init__(self, runners: list, *, max_batch: int, max_delay_s: float, queue: int, batchable: bool,
                 clock=time.monotonic, on_batch=None, inline: bool = False):
        if max_batch < 1 or queue < 1 or not runners:
            raise ValueError("max_batch and queue must be at least 1, with at least one runner")
        self.runners = runners
        self.max_batch = max_batch if batchable else 1
        self.batchable = batchable
        self.max_delay_s = max(0.0, max_delay_s)
        self.capacity = queue
        self.clock = clock
        self.on_batch = on_batch or (lambda record: None)
        self.inline = inline and len(runners) == 1  # a batch so short that a thread hop costs more than it
        self.reserved = 0  # admitted requests not yet in a batch (queued, or still sending their body)
        self.running = 0
        self._queue: deque[_Item] = deque()
        self._arrived: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self._loop = None
        self._pool: ThreadPoolExecutor | None = None

    # admission -----------------------------------------------------------------------------------
    def admit(self) -> None:
        """Reserve a queue slot, or raise QueueFull; decided before the request body is read."""
        if self.reserved >= self.capacity:
            raise QueueFull
        self.reserved += 1

    def release(self) -> None:
        """Give back a slot whose request never reached the queue (a bad body)."""
        self.reserved -= 1

    @property
    def depth(self) -> int:
        return sum(1 for item in self._queue if not item.dropped)

    @property
    def idle(self) -> bool:
        return self.reserved == 0 and self.running == 0

    # submission ----------------------------------------------------------------------------------
    async def submit(self, inputs: dict[str, np.ndarray], deadline: float) -> dict[str, np.ndarray]:
        """The outputs for one admitted request; its slot is taken over from ``admit`` (and given back here
        when the request never reaches the queue)."""
        try:
            self._start()
            loop = asyncio.get_running_loop()
            first = next(iter(inputs.values()), None)
            samples = int(first.shape[0]) if first is not None and first.ndim else 1
            group = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items()))
            item = _Item(inputs, samples, group, deadline, self.clock(), loop.create_future())
        except BaseException:
            self.release()
            raise
        self._queue.append(item)
        self._arrived.set()
        timer = loop.call_later(max(0.0, deadline - self.clock()), self._expire, item)
        try:
            return await item.future
        except asyncio.CancelledError:  # the request's handler went away: a request not started never runs
            self._drop(item)
            raise
        finally:
            timer.cancel()

    def _expire(self, item: _Item) -> None:
        """The deadline passed: a request whose batch has not started is answered and never run."""
        if not item.started and not item.future.done():
            self._drop(item)
            item.future.set_exception(DeadlineExceeded())

    def _drop(self, item: _Item) -> None:
        if not item.dropped and not item.started:
            item.dropped = True
            self.reserved -= 1

    # sessions ------------------------------------------------------------------------------------
    def _start(self) -> None:
        """Session tasks on the running loop; started again after ``close`` or on another loop."""
        loop = asyncio.get_running_loop()
        if self._tasks and self._loop is loop and not any(t.done() for t in self._tasks):
            return
        for task in self._tasks:
            task.cancel()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=len(self.runners), thread_name_prefix="edgekit-session")
        self._loop = loop
        self._arrived = asyncio.Event()
        if self._queue:
            self._arrived.set()
        self._tasks = [loop.create_task(self._session(r)) for r in self.runners]

    async def close(self) -> None:
        """Stop the sessions; requests still queued are answered with an error, not left waiting."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks = []
        while self._queue:
            item = self._queue.popleft()
            if not item.dropped and not item.future.done():
                self._drop(item)
                item.future.set_exception(RuntimeError("the server stopped before this request ran"))
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _take(self, batch: list[_Item], samples: int) -> int:
        """Move queued requests that fit into ``batch``; expired ones are answered and skipped."""
        now = self.clock()
        kept = deque()
        while self._queue:
            item = self._queue.popleft()
            if item.dropped:
                continue
            if item.future.done():  # cancelled by its handler: never run
                self._drop(item)
                continue
            if now >= item.deadline:
                self._expire(item)
                continue
            fits = not batch or (item.group == batch[0].group and samples + item.samples <= self.max_batch)
            if fits:
                batch.append(item)
                samples += item.samples
                if samples >= self.max_batch:
                    break
            else:
                kept.append(item)
        self._queue.extendleft(reversed(kept))
        return samples

    async def _session(self, runner) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.depth:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch: list[_Item] = []
            samples = self._take(batch, 0)
            if not batch:
                continue
            if samples < self.max_batch and self.running and self.max_delay_s > 0:
                until = self.clock() + self.max_delay_s
                while samples < self.max_batch and self.clock() < until:
                    self._arrived.clear()
                    try:
                        await asyncio.wait_for(self._arrived.wait(), until - self.clock())
                    except asyncio.TimeoutError:
                        break
                    samples = self._take(batch, samples)
            now = self.clock()
            live = []
            for item in batch:
                if item.dropped:
                    continue
                if now >= item.deadline:  # never run late
                    self._expire(item)
                    continue
                item.started = True
                self.reserved -= 1
                live.append(item)
            if not live:
                continue
            record = BatchRecord(len(live), sum(i.samples for i in live), [now - i.enqueued for i in live])
            self.running += 1
            try:
                if self.inline:
                    outputs, record.infer_s = _run(runner, [i.inputs for i in live])
                else:
                    outputs, record.infer_s = await loop.run_in_executor(self._pool, _run, runner,
                                                                         [i.inputs for i in live])
                results = _split(outputs, [i.samples for i in live])
            except Exception as exc:  # a runtime failure answers this batch's requests, the server goes on
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            finally:
                self.running -= 1
            for item, result in zip(live, results):
                if not item.future.done():
                    item.future.set_result(result)
            self.on_batch(record)


def _run(runner, parts: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], float]:
    """The stacked batch's outputs and the seconds the runtime took."""
    feed = parts[0] if len(parts) == 1 else {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
    start = time.perf_counter()
    outputs = dict(runner.run(feed))
    return outputs, time.perf_counter() - start


def _split(outputs: dict[str, np.ndarray], sizes: list[int]) -> list[dict[str, np.ndarray]]:
    if len(sizes) == 1:
        return [outputs]
    cuts = np.cumsum(sizes)[:-1]
    pieces = {n: np.split(np.asarray(v), cuts) for n, v in outputs.items()}
    return [{n: pieces[n][i] for n in outputs} for i in range(len(sizes))]
