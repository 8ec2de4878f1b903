"""All gateway settings in one place, read from `SARM_*` environment variables (nothing else reads the env)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sarm.scoring.options import EngineOptions
from sarm_gateway.auth import check_tokens

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Built by `make setup` from the shipped checkpoint (model_repo/default/checkpoint).
DEFAULT_MODEL_REPO = PROJECT_ROOT / ".cache" / "model_repo" / "default"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SARM_", protected_namespaces=())

    model_repo: Path = DEFAULT_MODEL_REPO
    backend: Literal["local", "triton"] = "local"
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = Field(10.0, gt=0)  # per Triton request, for calls that carry no deadline
    grpc_host: str = "0.0.0.0"
    grpc_port: int = Field(50051, ge=0, le=65535)  # 0: any free port
    # The HTTP API (video scoring, model info) with /metrics, /livez and /readyz; None: no HTTP API, and the
    # operational endpoints alone are served on metrics_port instead.
    http_host: str = "0.0.0.0"
    http_port: int | None = Field(None, ge=0, le=65535)
    metrics_port: int = Field(9464, ge=0, le=65535)
    # Local backend: onnxruntime threads per session and sessions running at once.
    intra_op_threads: int = Field(1, ge=0)
    inference_workers: int = Field(1, ge=1)
    # Micro-batching of concurrent encoder and heads calls (local backend). Calls arriving while a batch runs
    # form the next one anyway, so by default a lone call does not wait for company.
    max_batch_size: int = Field(32, ge=1)
    max_batch_delay_ms: float = Field(0.0, ge=0)
    # In-process caches: embeddings, and window scores (a repeated window skips the heads).
    frame_cache_entries: int = Field(20_000, ge=0)  # ~5 KB each at 1280-d
    cache_ttl_s: float = Field(600.0, gt=0)  # every in-process entry: frame, instruction, score
    instruction_cache_entries: int = Field(1_000, ge=0)
    score_cache_entries: int = Field(50_000, ge=0)  # ~0.6 KB each (one window, 5 stages): ~30 MB
    # Shared cache of embeddings and scores (Redis, behind the in-process one); None: in-process only.
    redis_url: str | None = None  # e.g. redis://127.0.0.1:6379/0
    redis_ttl_s: float = Field(3600.0, gt=0)  # every Redis key expires
    redis_timeout_ms: float = Field(50.0, gt=0)  # connect, each reply, and waiting for a pooled connection
    redis_max_connections: int = Field(16, ge=1)
    redis_backoff_s: float = Field(1.0, ge=0)  # after a Redis error, skip Redis this long (requests go on)
    # Backpressure and limits.
    max_in_flight: int = Field(64, ge=1)  # unary calls being worked on
    max_streams: int = Field(256, ge=1)  # open streams (each has at most one step in flight)
    retry_after_ms: int = Field(100, ge=0)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_instruction_chars: int = Field(1000, ge=1)
    # Instructions less similar than this (cosine, the model's text encoder) to every task the model knows are refused
    # with INVALID_ARGUMENT / HTTP 422 listing the known instructions; measured in bench/task_matching.py.
    task_match_min: float = Field(0.63, ge=-1.0, le=1.0)
    # Video uploads (POST /v1/videos:score): streamed to a temp file in upload_dir (None: the system's), refused
    # once over max_upload_bytes or when no data came for upload_timeout_s; decoded within the video limits.
    upload_dir: Path | None = None
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024)
    upload_timeout_s: float = Field(30.0, gt=0)
    max_video_seconds: float = Field(600.0, gt=0)
    max_video_frames: int = Field(18_000, ge=1)
    max_video_pixels: int = Field(3840 * 2160, ge=1)  # width × height of the uploaded video, before resizing
    health_interval_s: float = Field(2.0, gt=0)  # how often health re-checks that the backend is ready
    # SIGTERM: NOT_SERVING (gRPC health) and not ready (/readyz) at once; new calls get UNAVAILABLE (HTTP 503 with
    # Retry-After), which clients retry on another replica; calls in flight get up to this long to finish, and any
    # still running then get UNAVAILABLE. Never CANCELLED: the gRPC server keeps taking calls (to refuse them)
    # until the work in flight is done.
    drain_seconds: float = Field(10.0, ge=0)
    # Admission by time as well as by count: a unary call is refused (RESOURCE_EXHAUSTED / HTTP 429, retry-after =
    # the excess) when the frames in flight plus its own, at the measured seconds per frame, would take longer
    # than drain_budget × drain_seconds. Seconds per frame: an EWMA of the engine's encoder + heads batch timings
    # per frame encoded (local backend; on Triton, and before the first batches, only max_in_flight applies).
    # A lone call is always admitted. The rest of the drain is headroom for decoding, the RPCs and estimate error.
    # drain_seconds 0 turns this bound off.
    drain_budget: float = Field(0.5, gt=0, le=1)
    # Auth: one bearer token per client role (JSON role → token, e.g. '{"controller": "…"}'); empty: auth off.
    # Roles and what each may call: sarm_gateway/auth.py.
    auth_tokens: dict[str, str] = Field(default_factory=dict)
    # TLS for the gRPC port: a PEM certificate chain and its key; with a client CA, clients must present a
    # certificate it signed (mutual TLS).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None

    # RA-BC jobs over datasets (HTTP /v1/rabc/jobs): off until a data root is set. Jobs may read only datasets
    # under it. They score on the served model through the gateway's engine and backend (local or Triton). State
    # and results live in Redis when SARM_REDIS_URL is set (any
    # replica answers, and they outlive the replica that ran the job), else in this process's memory.
    data_root: Path | None = None
    rabc_workers: int = Field(1, ge=1)  # jobs computed at once; the rest wait, queued
    rabc_max_jobs: int = Field(8, ge=1)  # jobs queued or running on this replica; beyond it: 429
    job_ttl_s: float = Field(24 * 3600.0, gt=0)  # how long a job's state and results are kept
    job_heartbeat_s: float = Field(1.0, gt=0)  # how often a running job's state is saved
    job_lease_s: float = Field(30.0, gt=0)  # a job not heard of for this long died with its replica
    job_redis_timeout_ms: float = Field(2000.0, gt=0)  # job state must be written, so it waits longer than caches

    def engine_options(self) -> EngineOptions:
        """The scoring engine's part of these settings."""
        return EngineOptions(**{name: getattr(self, name) for name in EngineOptions.__dataclass_fields__})

    @field_validator("auth_tokens")
    @classmethod
    def _known_roles(cls, tokens: dict[str, str]) -> dict[str, str]:
        check_tokens(tokens)
        return tokens

    @model_validator(mode="after")
    def _tls_complete(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both SARM_TLS_CERT_FILE and SARM_TLS_KEY_FILE (or neither)")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("SARM_TLS_CLIENT_CA_FILE (mutual TLS) needs SARM_TLS_CERT_FILE and SARM_TLS_KEY_FILE")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"SARM_{name.upper()}: {path} is not a readable file")
        return self
