"""The scoring engine's Prometheus metrics (stage latencies, micro-batches, caches, the model), in a registry of
their own (several engines in one process don't collide). Front ends add theirs to the same registry
(sarm_gateway.metrics).

Event metrics (latencies, batch sizes) are observed where the event happens; levels (queue depth) and the caches'
hit/miss/error counts are read from their owners at scrape time, so the code that keeps them needs no metric calls
of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

STAGES = ("queue", "cache", "encode", "heads", "total")
# 0.5 ms … 60 s: a cache lookup at the low end, a long uploaded video at the high end.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class CacheCounts(Protocol):
    hits: int
    misses: int


@dataclass(frozen=True)
class BatcherMetrics:
    """What one micro-batcher reports: the rows of each batch it runs, each call's wait for its batch, and (read at
    scrape time from the batcher) the rows waiting."""

    batch_rows: Histogram
    queue_wait: Histogram
    queue_depth: Gauge


class _CacheCollector(Collector):
    """sarm_cache_{hits,misses,errors}_total from the caches' own counters (errors: tiers that can fail)."""

    def __init__(self) -> None:
        self.caches: dict[tuple[str, str], CacheCounts] = {}

    def collect(self) -> Iterator[Metric]:
        families = {
            what: CounterMetricFamily(
                f"sarm_cache_{what}",
                f"Cache {what}, by tier and kind (frame, instruction: embeddings; score: window scores)",
                labels=("tier", "kind"),
            )
            for what in ("hits", "misses", "errors")
        }
        for (tier, kind), cache in self.caches.items():
            for what, family in families.items():
                count = getattr(cache, what, None)
                if count is not None:
                    family.add_metric((tier, kind), count)
        yield from families.values()


class EngineMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        # total: one gRPC unary call or stream step (what a control loop waits for); a whole uploaded video is one
        # HTTP request, timed by sarm_http_request_duration_seconds instead.
        latency = Histogram(
            "sarm_engine_latency_seconds",
            "Engine time by stage: queue (micro-batcher wait), cache "
            "(lookup incl. Redis), encode, heads (one backend batch), total (one gRPC call or step)",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage = {name: latency.labels(name) for name in STAGES}
        self._batch_rows = Histogram(
            "sarm_batcher_batch_size_rows",
            "Rows per micro-batch run, by model",
            ("model",),
            buckets=ROW_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "sarm_batcher_queue_depth_rows", "Rows waiting for a micro-batch, by model", ("model",), registry=registry
        )
        self._model = Info("sarm_model", "The model being served", registry=registry)
        self.task_refusals = Counter(
            "sarm_task_refusals",
            "Instructions refused: no known task similar enough (SARM_TASK_MATCH_MIN)",
            registry=registry,
        )
        self._caches = _CacheCollector()
        registry.register(self._caches)

    def batcher(self, model: str) -> BatcherMetrics:
        return BatcherMetrics(self._batch_rows.labels(model), self.stage["queue"], self.queue_depth.labels(model))

    def watch_caches(self, caches: Iterable[tuple[str, str, CacheCounts | None]]) -> None:
        """(tier, kind, cache) triples; a None cache (a tier not configured) exports nothing."""
        self._caches.caches.update({(tier, kind): cache for tier, kind, cache in caches if cache is not None})

    def model_info(self, model_version: str, frame_encoder: str, text_encoder: str, backend: str) -> None:
        self._model.info(
            {
                "model_version": model_version,
                "frame_encoder": frame_encoder,
                "text_encoder": text_encoder,
                "backend": backend,
            }
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
