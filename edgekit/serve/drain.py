"""What both apps share for SIGTERM: the count of admitted requests not yet answered, and the drain that the
server (server.py) starts on the first signal: readiness turns false and new requests get 503, while the requests
admitted before it are still answered, and counted by how they were."""
from __future__ import annotations

import time


class Draining:
    """A mixin for an app: ``_init_drain`` in its constructor, ``active += 1`` when it admits a request and
    ``_answered(start, status)`` when that request is answered."""

    def _init_drain(self) -> None:
        self.active = 0  # admitted requests not yet answered
        self.draining = False
        self.drain_admitted = 0  # admitted and unanswered when the drain began
        self.drain_answered: dict[int, int] = {}  # how those were answered, by code
        self._drain_started = float("inf")

    def _answered(self, start: float, status: int) -> None:
        self.active -= 1
        if self.draining and start < self._drain_started:
            self.drain_answered[status] = self.drain_answered.get(status, 0) + 1

    def drain(self) -> None:
        """Readiness turns false and new requests get 503; admitted ones are still answered."""
        if not self.draining:
            self.draining = True
            self._drain_started = time.monotonic()
            self.drain_admitted = self.active

    def drain_summary(self) -> str:
        answered = ", ".join(f"{n} with {code}" for code, n in sorted(self.drain_answered.items())) or "none"
        return f"drained: {self.drain_admitted} request(s) admitted before the signal, answered: {answered}"
