"""Prometheus metrics for one served model, in the app's own registry (no process-global collectors).

The counts add up: ``edgekit_requests_total`` by outcome is ok + rejected + error, every request counted
once, and the sum of ``edgekit_batch_size`` (requests per batch) equals ``edgekit_inferences_total``.
"""
from __future__ import annotations

OUTCOMES = {200: "ok", 503: "rejected", 504: "rejected"}  # every other code is an error
BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self, model: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("edgekit_requests", "Inference requests answered, by outcome and HTTP code",
                                ["model", "outcome", "code"], registry=r)
        self.rejections = Counter("edgekit_rejections", "Requests refused without running, by reason",
                                  ["model", "reason"], registry=r)
        self.cache = Counter("edgekit_cache_events", "Response cache lookups and evictions, by event",
                             ["model", "event"], registry=r)
        self.inferences = Counter("edgekit_inferences", "Requests run by a session (cache hits excluded)",
                                  ["model"], registry=r)
        self.batch_size = Histogram("edgekit_batch_size", "Requests per batch run", ["model"], registry=r,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_samples = Histogram("edgekit_batch_samples", "Samples per batch run", ["model"], registry=r,
                                       buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.queue_s = Histogram("edgekit_queue_seconds", "Seconds a request waited for its batch", ["model"],
                                 registry=r, buckets=BUCKETS_S)
        self.infer_s = Histogram("edgekit_inference_seconds", "Seconds a batch ran in the runtime", ["model"],
                                 registry=r, buckets=BUCKETS_S)
        self.request_s = Histogram("edgekit_request_seconds", "Seconds from admission to the answer",
                                   ["model"], registry=r, buckets=BUCKETS_S)
        self.depth = Gauge("edgekit_queue_depth", "Requests admitted and not yet running", ["model"], registry=r)
        self.info = Info("edgekit_model", "The served file and the execution provider in use", registry=r)
        self.model = model
        self._codes: dict[int, object] = {}
        self._reasons: dict[str, object] = {}
        self._events: dict[str, object] = {}
        # children bound once: a label lookup per observation would cost more than the rest of the metrics
        self._request_s, self._inferences = self.request_s.labels(model), self.inferences.labels(model)
        self._batch_size, self._batch_samples = self.batch_size.labels(model), self.batch_samples.labels(model)
        self._infer_s, self._queue_s = self.infer_s.labels(model), self.queue_s.labels(model)

    def answered(self, code: int, seconds: float | None = None) -> None:
        child = self._codes.get(code)
        if child is None:
            child = self._codes[code] = self.requests.labels(self.model, OUTCOMES.get(code, "error"), str(code))
        child.inc()
        if seconds is not None:
            self._request_s.observe(seconds)

    def rejected(self, reason: str) -> None:
        child = self._reasons.get(reason)
        if child is None:
            child = self._reasons[reason] = self.rejections.labels(self.model, reason)
        child.inc()

    def cache_event(self, event: str, n: int = 1) -> None:
        child = self._events.get(event)
        if child is None:
            child = self._events[event] = self.cache.labels(self.model, event)
        child.inc(n)

    def batch(self, record) -> None:
        self._inferences.inc(record.requests)
        self._batch_size.observe(record.requests)
        self._batch_samples.observe(record.samples)
        self._infer_s.observe(record.infer_s)
        for q in record.queue_s:
            self._queue_s.observe(q)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
