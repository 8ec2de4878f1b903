"""How the scoring engine runs: backend, batching, caches. The gateway fills it from its settings (`SARM_*`); the CLI
and Ray workers from their flags. Defaults are the gateway's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BackendKind = Literal["local", "triton"]


@dataclass(frozen=True)
class EngineOptions:
    backend: BackendKind = "local"
    triton_url: str = "127.0.0.1:8001"
    triton_timeout_s: float = 10.0  # per Triton request, for calls that carry no deadline
    # Local backend: onnxruntime threads per session and sessions running at once.
    intra_op_threads: int = 1
    inference_workers: int = 1
    # Micro-batching of concurrent encoder and heads calls (local backend).
    max_batch_size: int = 32
    max_batch_delay_ms: float = 0.0
    # In-process caches (0 entries: off) and their TTL.
    frame_cache_entries: int = 20_000
    instruction_cache_entries: int = 1_000
    score_cache_entries: int = 50_000
    cache_ttl_s: float = 600.0
    # Redis tier behind them (None: in-process only); any Redis error is a counted miss.
    redis_url: str | None = None
    redis_ttl_s: float = 3600.0
    redis_timeout_ms: float = 50.0
    redis_max_connections: int = 16
    redis_backoff_s: float = 1.0
    max_instruction_chars: int = 1000
    # An instruction whose cosine similarity to every known task's instruction is below this is refused (an unknown
    # task, a typo, another robot's instruction). 0.63: halfway between the lowest paraphrase (0.76) and the highest
    # unrelated instruction (0.50) of bench/task_matching.py on the default model's text encoder.
    task_match_min: float = 0.63
