"""The gateway's Prometheus metrics: the engine's (sarm.scoring.metrics) plus the front ends' requests, in-flight
calls, open streams and readiness, in one registry per gateway."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from sarm.scoring.metrics import LATENCY_BUCKETS, EngineMetrics


class Metrics(EngineMetrics):
    def __init__(self) -> None:
        super().__init__()
        registry = self.registry
        self.grpc_requests = Counter(
            "sarm_grpc_requests",
            "gRPC calls finished, by method and status code",
            ("method", "code"),
            registry=registry,
        )
        self.grpc_duration = Histogram(
            "sarm_grpc_request_duration_seconds",
            "gRPC call duration (a stream: its life)",
            ("method",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_requests = Counter(
            "sarm_http_requests",
            "HTTP requests answered, by method, route and status code",
            ("method", "route", "code"),
            registry=registry,
        )
        self.http_duration = Histogram(
            "sarm_http_request_duration_seconds",
            "HTTP request duration, upload included",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "sarm_engine_in_flight_requests", "Admitted unary gRPC calls and HTTP scoring calls", registry=registry
        )
        self.active_streams = Gauge("sarm_grpc_active_streams", "Open StreamEpisode streams", registry=registry)
        self.ready = Gauge(
            "sarm_service_ready", "1 while the backend is ready and the gateway is not draining", registry=registry
        )
