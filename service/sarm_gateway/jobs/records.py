"""A job's record: what was asked, where it stands, and what came of it (JSON, so any replica can read it)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})

# What a finished job can be downloaded as: name in the API → file written by sarm.rabc.files.
RESULT_FILES = {"progress": "sarm_progress.parquet", "weights": "rabc_weights.parquet"}


@dataclass
class Job:
    id: str
    dataset: str  # as the caller gave it: relative to the data root
    params: dict[str, Any]  # chunk_size, kappa, eps, stats, stride
    state: JobState = JobState.QUEUED
    episodes_done: int = 0
    episodes_total: int | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)
    heartbeat_at: float = field(default_factory=time.time)  # refreshed while a replica works on it

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        fields = json.loads(text)
        fields["state"] = JobState(fields["state"])
        return cls(**fields)
