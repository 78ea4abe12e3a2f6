"""The response cache: LRU over a byte budget with an optional TTL, keyed by what the model sees.

The key hashes the model file's sha256 and, per input in name order, its name, dtype, shape and bytes,
so the same bytes under another dtype or shape are another key. Only successful results are stored, as
read-only copies, so a hit returns exactly the arrays the miss computed. Identical misses in flight share
one computation (``lookup`` hands the second caller the first one's future).
"""
from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


def cache_key(model_sha256: str, inputs: dict[str, np.ndarray]) -> bytes:
    h = hashlib.sha256(model_sha256.encode())
    for name in sorted(inputs):
        a = np.ascontiguousarray(inputs[name])
        h.update(f"\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.digest()


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # misses that waited on an identical miss in flight instead of computing again
    evictions: int = 0
    expired: int = 0


class ResponseCache:
    """``max_bytes`` = 0 turns the cache off (every lookup is a miss that is not shared or stored)."""

    def __init__(self, max_bytes: int, ttl_s: float | None = None, clock=time.monotonic, on_event=None):
        self.max_bytes = int(max_bytes)
        self.ttl_s = ttl_s
        self.clock = clock
        self.stats = CacheStats()
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[dict[str, np.ndarray], int, float]] = OrderedDict()
        self._inflight: dict[bytes, asyncio.Future] = {}
        self._on_event = on_event or (lambda event, n=1: None)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        outputs, size, stored = entry
        if self.ttl_s is not None and self.clock() - stored > self.ttl_s:
            self._drop(key)
            self.stats.expired += 1
            self._on_event("expired")
            return None
        self._entries.move_to_end(key)
        return outputs

    def put(self, key: bytes, outputs: dict[str, np.ndarray]) -> None:
        size = sum(np.asarray(v).nbytes for v in outputs.values()) + len(key)
        if not self.enabled or size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        frozen = {}
        for name, value in outputs.items():
            copy = np.array(value, copy=True)
            copy.setflags(write=False)
            frozen[name] = copy
        self._entries[key] = (frozen, size, self.clock())
        self.bytes += size
        while self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.stats.evictions += 1
            self._on_event("eviction")

    def _drop(self, key: bytes) -> None:
        _, size, _ = self._entries.pop(key)
        self.bytes -= size

    async def lookup(self, key: bytes, compute):
        """The outputs for ``key`` and how they were got ('hit', 'shared' or 'miss'); ``compute()`` is
        awaited on a miss, and its result stored (and shared) only when it succeeds."""
        if not self.enabled:
            return await compute(), "miss"
        found = self.get(key)
        if found is not None:
            self.stats.hits += 1
            self._on_event("hit")
            return found, "hit"
        pending = self._inflight.get(key)
        if pending is not None:
            try:
                result = await asyncio.shield(pending)
            except (Exception, asyncio.CancelledError):
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # this request itself was cancelled
                    raise
                return await self.lookup(key, compute)  # only a success is shared: redo a failed one
            self.stats.shared += 1
            self._on_event("shared")
            return result, "shared"
        self.stats.misses += 1
        self._on_event("miss")
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            outputs = await compute()
            self.put(key, outputs)
            stored = self.get(key)
            result = stored if stored is not None else outputs
        except BaseException:
            future.cancel()  # the waiters compute for themselves
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(result)
        return result, "miss"
