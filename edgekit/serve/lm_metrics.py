"""Prometheus metrics of a served LM, in the app's own registry.

The counts add up: ``edgekit_lm_requests_total`` by outcome is ok + rejected + cancelled + error (every request
    once);
``edgekit_lm_sequences_finished_total`` by reason counts every admitted sequence once; the prefix-cache queries
(hit + miss) are the sequences started; ``edgekit_lm_generation_tokens_total`` is the sum of the completion tokens
reported in ``usage``.
"""
from __future__ import annotations

OUTCOMES = {200: "ok", 503: "rejected", 499: "cancelled"}  # 499: the client closed the request
TTFT_S = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
TPOT_S = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)


class LmMetrics:
    def __init__(self, model: str):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = r = CollectorRegistry(auto_describe=True)
        m = ["model"]
        self.requests = Counter("edgekit_lm_requests", "HTTP generation requests answered, by outcome and code",
                                m + ["outcome", "code"], registry=r)
        self.rejections = Counter("edgekit_lm_rejections", "Requests refused without running, by reason",
                                  m + ["reason"], registry=r)
        self.finished_total = Counter("edgekit_lm_sequences_finished", "Sequences ended, by finish reason",
                                      m + ["reason"], registry=r)
        self.ttft = Histogram("edgekit_lm_time_to_first_token_seconds", "Admission to the first generated token",
                              m, registry=r, buckets=TTFT_S)
        self.tpot = Histogram("edgekit_lm_time_per_output_token_seconds",
                              "Mean time between a sequence's generated tokens", m, registry=r, buckets=TPOT_S)
        self.prompt_tokens = Counter("edgekit_lm_prompt_tokens", "Prompt tokens of the sequences started", m,
                                     registry=r)
        self.computed_tokens = Counter("edgekit_lm_prompt_tokens_computed", "Prompt tokens run through the model "
                                       "(the rest came from the prefix cache)", m, registry=r)
        self.generation_tokens = Counter("edgekit_lm_generation_tokens", "Tokens generated (EOS excluded)", m,
                                         registry=r)
        self.rate = Gauge("edgekit_lm_generation_tokens_per_second", "Tokens sampled per second over the last 5 s",
                          m, registry=r)
        self.running = Gauge("edgekit_lm_sequences_running", "Sequences in the running batch", m, registry=r)
        self.waiting = Gauge("edgekit_lm_sequences_waiting", "Sequences admitted and waiting for a slot", m,
                             registry=r)
        self.kv = Gauge("edgekit_lm_kv_cache_usage_ratio", "KV cache cells held by the slots / cells in the context",
                        m, registry=r)
        self.prefix_queries = Counter("edgekit_lm_prefix_cache_queries", "Sequences started, by whether a cached "
                                      "prefix was reused", m + ["result"], registry=r)
        self.prefix_saved = Counter("edgekit_lm_prefix_cache_tokens_saved", "Prompt tokens taken from the prefix "
                                    "cache instead of computed", m, registry=r)
        self.info = Info("edgekit_lm_model", "The served file and its runtime", registry=r)
        self.model = model
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *labels):
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.model, *labels)
        return child

    def answered(self, code: int) -> None:
        self._child(self.requests, OUTCOMES.get(code, "error"), str(code)).inc()

    def rejected(self, reason: str) -> None:
        self._child(self.rejections, reason).inc()

    def finished(self, reason: str) -> None:
        self._child(self.finished_total, reason).inc()

    def first_token(self, seconds: float) -> None:
        self._child(self.ttft).observe(seconds)

    def per_token(self, seconds: float) -> None:
        self._child(self.tpot).observe(seconds)

    def generated(self, n: int) -> None:
        self._child(self.generation_tokens).inc(n)

    def prefix(self, reused: int, prompt: int) -> None:
        self._child(self.prefix_queries, "hit" if reused else "miss").inc()
        self._child(self.prompt_tokens).inc(prompt)
        if reused:
            self._child(self.prefix_saved).inc(reused)

    def queued(self, waiting: int, running: int) -> None:
        self._child(self.waiting).set(waiting)
        self._child(self.running).set(running)

    def stepped(self, computed: int, rate: float, kv: float, waiting: int, running: int) -> None:
        if computed:
            self._child(self.computed_tokens).inc(computed)
        self._child(self.rate).set(rate)
        self._child(self.kv).set(kv)
        self.queued(waiting, running)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
