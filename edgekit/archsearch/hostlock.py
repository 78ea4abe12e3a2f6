"""One lock per host for the search's CPU work: a benchmark never overlaps a training or another benchmark.

Training holds it shared (several may train side by side); measuring (export, quantize, validate, bench)
holds it exclusive. ``flock`` alone lets a steady stream of shared holders starve an exclusive waiter, so
every acquisition first passes a turnstile (a second lock file taken exclusive for a moment): once a
measurement waits at the main lock, no new training starts until it has run.

The lock files live in ``$EDGEKIT_HOST_LOCK_DIR`` (default: the system temp folder), so every
``edgekit nas`` worker of this user on this host shares them, whichever study it works on.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator


def lock_dir() -> Path:
    return Path(os.environ.get("EDGEKIT_HOST_LOCK_DIR") or tempfile.gettempdir())


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class HostLock:
    """``with lock.train(): ...`` (shared) and ``with lock.bench(): ...`` (exclusive); each records the
    span it held the lock for in ``spans`` as (kind, start, end) wall-clock seconds."""

    def __init__(self, folder: Path | None = None, name: str = "edgekit-nas"):
        folder = Path(folder) if folder is not None else lock_dir()
        folder.mkdir(parents=True, exist_ok=True)
        uid = os.getuid() if hasattr(os, "getuid") else 0
        self.main = folder / f"{name}-{uid}.lock"
        self.turnstile = folder / f"{name}-{uid}.turnstile"
        self.spans: list[tuple[str, float, float]] = []

    @contextlib.contextmanager
    def _held(self, kind: str, mode: int) -> Iterator[None]:
        fd = os.open(self.main, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with _flock(self.turnstile, fcntl.LOCK_EX):
                fcntl.flock(fd, mode)
            start = time.time()
            try:
                yield
            finally:
                self.spans.append((kind, start, time.time()))
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def train(self):
        return self._held("train", fcntl.LOCK_SH)

    def bench(self):
        return self._held("bench", fcntl.LOCK_EX)

    @contextlib.contextmanager
    def short(self) -> Iterator[None]:
        """A brief exclusive section for the study's bookkeeping (counting trials and asking for the next
        one), so workers on this host never overshoot the global trial budget."""
        with _flock(self.main.with_suffix(".ask"), fcntl.LOCK_EX):
            yield
