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

    # Model and backend.
    model_repo: Path = Field(
        DEFAULT_MODEL_REPO,
        description="Model repository written by `sarm export`; its manifest gives stages, tasks, window, image size "
        "and encoders. Default: the shipped model, built by `make setup` (the image sets /opt/sarm/model_repo).",
    )
    encoder_path: Path | None = Field(
        None,
        description="Local weights of an instruction encoder the model needs that ships none (CLIP: a save_pretrained "
        "folder or a Hub id in the local cache); default: the folder the manifest records. Nothing is downloaded.",
    )
    backend: Literal["local", "triton"] = Field(
        "local", description="`local`: ONNX Runtime in the gateway process; `triton`: the models run on Triton."
    )
    triton_url: str = Field("127.0.0.1:8001", description="Triton's gRPC HOST:PORT (backend `triton`).")
    triton_timeout_s: float = Field(
        10.0, gt=0, description="Timeout of one Triton request, for calls that carry no deadline of their own."
    )
    # Ports.
    grpc_host: str = Field("0.0.0.0", description="Interface the gRPC server binds.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port (0: any free port).")
    http_host: str = Field("0.0.0.0", description="Interface the HTTP server binds.")
    http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="HTTP port: the API (video scoring, model info, RA-BC jobs) with /metrics, /livez and /readyz. "
        "Unset: no HTTP API, and /metrics, /livez and /readyz alone are served on SARM_METRICS_PORT "
        "(the image sets 8080).",
    )
    metrics_port: int = Field(
        9464, ge=0, le=65535, description="Where /metrics and the probes are served when SARM_HTTP_PORT is unset."
    )
    # Local backend (ONNX Runtime in the gateway process).
    intra_op_threads: int = Field(
        1, ge=0, description="ONNX Runtime threads per session (local backend; 0: ONNX Runtime's default)."
    )
    inference_workers: int = Field(1, ge=1, description="ONNX Runtime sessions running at once (local backend).")
    # Micro-batching: calls arriving while a batch runs form the next one anyway, so a lone call need not wait.
    max_batch_size: int = Field(
        32, ge=1, description="Most rows in one micro-batch of encoder or heads calls (local backend)."
    )
    max_batch_delay_ms: float = Field(
        0.0,
        ge=0,
        description="How long a micro-batch waits for company; 0: calls arriving while a batch runs form the next.",
    )
    # In-process caches.
    frame_cache_entries: int = Field(
        20_000, ge=0, description="In-process frame-embedding cache size (~5 KB an entry at 1280-d)."
    )
    cache_ttl_s: float = Field(
        600.0, gt=0, description="Lifetime of every in-process cache entry (frame, instruction or window score)."
    )
    instruction_cache_entries: int = Field(1_000, ge=0, description="In-process instruction-embedding cache size.")
    score_cache_entries: int = Field(
        50_000,
        ge=0,
        description="In-process window-score cache size (~0.6 KB an entry, one window with 5 stages: ~30 MB); "
        "a repeated window (same frames, instruction, model) skips the heads. 0: off.",
    )
    # Shared cache (Redis, behind the in-process one).
    redis_url: str | None = Field(
        None,
        description="Shared Redis cache of embeddings and window scores behind the in-process one, e.g. "
        "redis://127.0.0.1:6379/0; also the RA-BC job store. Unset: in-process only. Any Redis failure is a "
        "counted miss.",
    )
    redis_ttl_s: float = Field(3600.0, gt=0, description="Expiry of every Redis cache key.")
    redis_timeout_ms: float = Field(
        50.0,
        gt=0,
        description="Redis connect, reply and pool-wait timeout; past it the lookup is a miss.",
    )
    redis_max_connections: int = Field(16, ge=1, description="Redis connection pool size.")
    redis_backoff_s: float = Field(
        1.0, ge=0, description="After a Redis error, skip Redis this long (requests go on without it)."
    )
    # Backpressure and limits.
    max_in_flight: int = Field(
        64, ge=1, description="Unary calls worked on at once; more get RESOURCE_EXHAUSTED (HTTP 429) with a retry hint."
    )
    max_streams: int = Field(
        256, ge=1, description="Open episode streams (each has at most one step in flight); more are refused."
    )
    retry_after_ms: int = Field(
        100, ge=0, description="The `retry-after-ms` hint sent with RESOURCE_EXHAUSTED (HTTP: Retry-After)."
    )
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted.")
    max_instruction_chars: int = Field(1000, ge=1, description="Longest instruction accepted.")
    task_match_min: float = Field(
        0.63,
        ge=-1.0,
        le=1.0,
        description="Instructions less similar than this (cosine, the model's text encoder) to every task the model "
        "knows are refused with INVALID_ARGUMENT / HTTP 422 listing the known instructions "
        "(measured in bench/task_matching.py).",
    )
    # Video uploads (POST /v1/videos:score).
    upload_dir: Path | None = Field(
        None,
        description="Where video uploads are streamed to a temp file, removed when the request ends "
        "(unset: the system's temp dir).",
    )
    max_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Largest video upload; beyond it 413, as soon as the bytes arrive."
    )
    upload_timeout_s: float = Field(30.0, gt=0, description="An upload that sends nothing for this long: 408.")
    max_video_seconds: float = Field(600.0, gt=0, description="Longest uploaded video; beyond it 422.")
    max_video_frames: int = Field(18_000, ge=1, description="Most frames in an uploaded video; beyond it 422.")
    max_video_pixels: int = Field(
        3840 * 2160,
        ge=1,
        description="Largest frame (width × height) of an uploaded video, before resizing; beyond it 422.",
    )
    # Health and shutdown.
    health_interval_s: float = Field(2.0, gt=0, description="How often health re-checks that the backend is ready.")
    drain_seconds: float = Field(
        10.0,
        ge=0,
        description="After SIGTERM: NOT_SERVING (gRPC health) and not ready (/readyz) at once; new calls get "
        "UNAVAILABLE (HTTP 503 with Retry-After), which clients retry on another replica; calls in flight get up "
        "to this long to finish, then UNAVAILABLE (never CANCELLED). Keep it below the pod's grace period.",
    )
    drain_budget: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Admission by time as well as by count: a unary call is refused (RESOURCE_EXHAUSTED / HTTP 429, "
        "retry-after = the excess) when the frames in flight plus its own, at the gateway's measured seconds per "
        "frame, would take longer than drain_budget × SARM_DRAIN_SECONDS, so that what was admitted finishes within "
        "the drain. Seconds per frame: an EWMA of the gateway's busy time (calls in flight) per frame of the calls it "
        "completed, decoding, model, batching and RPCs included; the first call (warm-up) is not measured, and until "
        "a measure exists only SARM_MAX_IN_FLIGHT applies. A lone call is always admitted; video uploads (frames "
        "unknown until read) count against SARM_MAX_IN_FLIGHT only. The rest of the drain is headroom for estimate "
        "error. SARM_DRAIN_SECONDS=0 turns this bound off.",
    )
    # Auth and TLS.
    auth_tokens: dict[str, str] = Field(
        default_factory=dict,
        description="Bearer token per client role, as JSON role → token "
        '(`controller`, `evaluator`, `trainer`, `admin`; e.g. {"controller": "…"}). Empty: auth off. '
        "What each role may call: sarm_gateway/auth.py.",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain: the gRPC port serves TLS (needs SARM_TLS_KEY_FILE)."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of SARM_TLS_CERT_FILE.")
    tls_client_ca_file: Path | None = Field(
        None, description="With it, gRPC clients must present a certificate this CA signed (mutual TLS)."
    )

    # RA-BC jobs over datasets (HTTP /v1/rabc/jobs). State and results live in Redis when SARM_REDIS_URL is set
    # (any replica answers, and they outlive the replica that ran the job), else in this process's memory.
    data_root: Path | None = Field(
        None,
        description="Folder of the datasets RA-BC jobs (/v1/rabc/jobs) may read; jobs score on the served model "
        "through the gateway's engine and backend (local or Triton). Unset: jobs off.",
    )
    rabc_workers: int = Field(1, ge=1, description="RA-BC jobs computed at once on this replica; the rest wait.")
    rabc_max_jobs: int = Field(8, ge=1, description="RA-BC jobs queued or running on this replica; beyond it 429.")
    job_ttl_s: float = Field(24 * 3600.0, gt=0, description="How long a job's state and results are kept.")
    job_heartbeat_s: float = Field(1.0, gt=0, description="How often a running job's state is saved.")
    job_lease_s: float = Field(
        30.0, gt=0, description="A job not heard of for this long died with its replica (reported failed)."
    )
    job_redis_timeout_ms: float = Field(
        2000.0, gt=0, description="Redis timeout for job state (it must be written, so longer than the caches')."
    )

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
