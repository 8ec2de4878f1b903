"""The shared tier of the caches (embeddings, window scores): Redis, behind the in-process LRU, when `SARM_REDIS_URL`
is set.

A cache must never fail or stall a request: every Redis error (refused, timed out, server gone) reads as a miss,
skips the write and is counted, and after one the tier stands aside for `redis_backoff_s` so that a dead server
costs one timeout now and then instead of one per request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from sarm.scoring.options import EngineOptions


def connect(settings: EngineOptions, timeout_ms: float | None = None) -> Redis | None:
    """A client over a bounded pool, or None without a Redis URL. Connects lazily: an unreachable server does not
    stop the gateway from starting. `timeout_ms` overrides the cache's short timeout (job state can wait longer)."""
    if settings.redis_url is None:
        return None
    timeout = (settings.redis_timeout_ms if timeout_ms is None else timeout_ms) / 1000
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=timeout,  # waiting for a free connection
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # redis-py retries with backoff by default: seconds, not tens of ms
    )
    return Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


class RedisTier:
    """Float32 vectors of one dimension under `prefix` (which names what made them: an encoder id@version, or the
    model version), each with a TTL.

    Values are the raw float32 bytes: the dimension is fixed by what the prefix names, so a value of another
    length is not ours and reads as a miss."""

    def __init__(self, client: Redis, prefix: str, dim: int, ttl_s: float, backoff_s: float) -> None:
        self._client = client
        self.prefix = prefix
        self._dim = dim
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._backoff_s = backoff_s
        self._down_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0

    def _up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self) -> None:
        self.errors += 1
        self._down_until = time.monotonic() + self._backoff_s

    async def get_many(self, keys: Sequence[str]) -> list[np.ndarray | None]:
        """One round trip for all `keys`; None for each key Redis does not have (or could not be asked)."""
        found: list[bytes | str | None] = [None] * len(keys)  # str only with decode_responses, which we never set
        if keys and self._up():  # while standing aside after an error, lookups count as misses
            try:
                found = await self._client.mget([self.prefix + key for key in keys])
            except (RedisError, OSError):  # OSError covers asyncio's TimeoutError
                self._failed()
        size = self._dim * 4
        out = [np.frombuffer(v, np.float32).copy() if isinstance(v, bytes) and len(v) == size else None for v in found]
        hits = sum(v is not None for v in out)
        self.hits += hits
        self.misses += len(out) - hits
        return out

    async def put_many(self, items: dict[str, np.ndarray]) -> None:
        if not items or not self._up():
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(self.prefix + key, np.asarray(value, np.float32).tobytes(), px=self._ttl_ms)
                await pipe.execute()
        except (RedisError, OSError):
            self._failed()
