"""The one place that builds the gateway's shared objects (in the style of an app factory's dependencies): the
engine with its backend, caches and metrics injected, the in-flight bound both front ends share, and the RA-BC job
runner. Both front ends (gRPC in server.py, HTTP in http/app.py) take a `Deps` and build nothing of their own."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sarm.encoders.base import TextEncoder
from sarm.encoders.weights import use_encoder_path
from sarm.scoring.backends import Backend
from sarm.scoring.engine import Engine
from sarm.scoring.redis_cache import connect
from sarm_gateway.admission import Admission
from sarm_gateway.jobs.runner import JobRunner
from sarm_gateway.jobs.store import JobStore, MemoryJobStore, RedisJobStore
from sarm_gateway.metrics import Metrics
from sarm_gateway.settings import Settings


@dataclass
class Deps:
    settings: Settings
    engine: Engine
    metrics: Metrics  # the engine's metrics and the front ends'
    work: Admission  # unary calls of both front ends: a burst over HTTP and gRPC together still gets refused
    jobs: JobRunner


def job_store(settings: Settings) -> JobStore:
    """Redis when configured (any replica answers for any job), else this process's memory."""
    client = connect(settings.engine_options(), settings.job_redis_timeout_ms)
    if client is None:
        return MemoryJobStore(settings.job_ttl_s)
    return RedisJobStore(client, settings.job_ttl_s)


def build_deps(settings: Settings, backend: Backend | None = None, text_encoder: TextEncoder | None = None) -> Deps:
    """Everything from `settings`; `backend` and `text_encoder` replace the ones the repository names (tests)."""
    metrics = Metrics()
    use_encoder_path(settings.encoder_path)  # read where the engine loads the instruction encoder
    engine = Engine.open(Path(settings.model_repo), settings.engine_options(), metrics, text_encoder, backend)
    # Bounded by count and by the measured time to finish: what is admitted must fit in the drain (settings.py).
    budget_s = settings.drain_budget * settings.drain_seconds if settings.drain_seconds > 0 else math.inf
    work = Admission(settings.max_in_flight, settings.retry_after_ms, "requests", budget_s)
    metrics.in_flight.set_function(lambda: work.in_flight)
    jobs = JobRunner(settings, job_store(settings), engine)
    return Deps(settings, engine, metrics, work, jobs)
