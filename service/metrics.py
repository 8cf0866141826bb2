"""Prometheus metrics, in a registry of their own (one per engine, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.0,
    2.5,
    5.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "lmroute_route_decisions", "Routing decisions", ["router", "tier", "model", "reason"], registry=r
        )
        self.requests = Counter("lmroute_requests", "RPCs by status code", ["rpc", "code"], registry=r)
        self.request_seconds = Histogram(
            "lmroute_request_seconds", "RPC latency", ["rpc"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.strong_win_rate = Histogram(
            "lmroute_strong_win_rate", "Scores", ["router"], buckets=SCORE_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "lmroute_batch_size", "Prompts per model run", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "lmroute_batch_tokens",
            "Padded tokens per model run",
            ["model"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "lmroute_queue_wait_seconds",
            "Time queued before a run",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "lmroute_inference_seconds",
            "Tokenization + onnxruntime time per batch",
            ["model", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # multiprocess_mode: how `serve --workers N` merges the workers' gauges (ignored with one)
        self.queue_depth = Gauge(
            "lmroute_queue_depth", "Prompts waiting", ["model"], registry=r, multiprocess_mode="livesum"
        )
        self.max_batch_size = Gauge(
            "lmroute_max_batch_size",
            "Batch-size cap in use (after the startup probe)",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_instances = Gauge(
            "lmroute_model_instances",
            "Model sessions running batches concurrently (all workers)",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_hits = Counter("lmroute_cache_hits", "Route-decision cache hits", registry=r)
        self.cache_misses = Counter("lmroute_cache_misses", "Route-decision cache misses", registry=r)
