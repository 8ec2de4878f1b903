"""Window scores by content: a window the heads have already scored is answered from here instead of the heads.

A window's key covers everything the heads see: the model version (checkpoint digest), the instruction (text
encoder id@version and text), the number of valid positions, and the content key (frame bytes and frame encoder
id@version) of the frame at each of its positions, padding included, camera by camera. A value is what the heads
returned for that key, so a hit is bit-identical to the score it replaces. In-process LRU first, then Redis when
configured (a float32 vector per window: stage probabilities, τ, progress, confidence), with RedisTier's failure
semantics: any Redis error is a counted miss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from redis.asyncio import Redis

from sarm_gateway.cache import TTLCache
from sarm_gateway.redis_cache import RedisTier
from sarm_gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class WindowScore:
    stage_index: int
    stage_name: str
    stage_probs: np.ndarray  # (K,)
    tau: float
    progress: float
    confidence: float

    @classmethod
    def of(cls, stage_probs: np.ndarray, tau: float, progress: float, confidence: float,
           stage_names: Sequence[str]) -> WindowScore:
        stage = int(stage_probs.argmax())
        return cls(stage, stage_names[stage], stage_probs, float(tau), float(progress), float(confidence))


class ScoreCache:
    """The in-process tier in front of the Redis one (when `client` is given); Redis hits fill the in-process tier."""

    def __init__(self, settings: Settings, client: Redis | None, version: str, stage_names: Sequence[str]) -> None:
        self.version = version
        self._stage_names = list(stage_names)
        self.memory: TTLCache[WindowScore] = TTLCache(settings.score_cache_entries, settings.cache_ttl_s)
        self.redis: RedisTier | None = None
        if client is not None:
            self.redis = RedisTier(client, f"sarm:score:{version}:", len(stage_names) + 3, settings.redis_ttl_s,
                                   settings.redis_backoff_s)

    def keys(self, instruction_key: str, frame_keys: np.ndarray, lengths: np.ndarray) -> list[str]:
        """One key per window from its frames' content keys (N, L, C) and valid positions `lengths` (N,)."""
        prefix = f"{self.version}|{instruction_key}|"
        return [hashlib.sha256(f"{prefix}{length}|{'|'.join(keys.ravel())}".encode()).hexdigest()
                for keys, length in zip(frame_keys, lengths.tolist(), strict=True)]

    async def get_many(self, keys: Sequence[str]) -> list[WindowScore | None]:
        found = [self.memory.get(key) for key in keys]
        missing = [i for i, score in enumerate(found) if score is None]
        if self.redis is None or not missing:
            return found
        for i, vector in zip(missing, await self.redis.get_many([keys[i] for i in missing]), strict=True):
            if vector is not None:
                score = WindowScore.of(vector[:-3], vector[-3], vector[-2], vector[-1], self._stage_names)
                self.memory.put(keys[i], score)
                found[i] = score
        return found

    async def put_many(self, scores: dict[str, WindowScore]) -> None:
        for key, score in scores.items():
            self.memory.put(key, score)
        if self.redis is not None:
            # The heads return float32, so float32 in Redis loses nothing.
            await self.redis.put_many({key: np.array([*s.stage_probs, s.tau, s.progress, s.confidence], np.float32)
                                       for key, s in scores.items()})
