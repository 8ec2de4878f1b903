"""The caches' tiers: a bounded in-process LRU with a TTL on every entry, and `Tiered`, that LRU in front of Redis.
One class serves every kind the engine caches: frame and instruction embeddings, and window scores."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

import numpy as np

from sarm.scoring.redis_cache import RedisTier

V = TypeVar("V")


class TTLCache(Generic[V]):
    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: str, value: V) -> None:
        if self.max_entries == 0:
            return
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


class Tiered(Generic[V]):
    """The in-process tier in front of the Redis one (when configured): lookups ask memory first and Redis for the
    rest, Redis hits fill memory, writes go to both. Values travel to Redis as float32 vectors (`to_vector`,
    `from_vector`); a Redis failure is the tier's counted miss, never an error here."""

    def __init__(
        self,
        memory: TTLCache[V],
        redis: RedisTier | None,
        to_vector: Callable[[V], np.ndarray],
        from_vector: Callable[[np.ndarray], V],
    ) -> None:
        self.memory = memory
        self.redis = redis
        self._to_vector = to_vector
        self._from_vector = from_vector

    async def shared(self, keys: Sequence[str]) -> dict[str, V]:
        """What Redis has of `keys` (skipping memory), copied into memory."""
        if self.redis is None or not keys:
            return {}
        found = {}
        for key, vector in zip(keys, await self.redis.get_many(list(keys)), strict=True):
            if vector is not None:
                found[key] = value = self._from_vector(vector)
                self.memory.put(key, value)
        return found

    async def get_many(self, keys: Sequence[str]) -> list[V | None]:
        found = [self.memory.get(key) for key in keys]
        missing = [key for key, value in zip(keys, found, strict=True) if value is None]
        shared = await self.shared(missing)
        return [shared.get(key) if value is None else value for key, value in zip(keys, found, strict=True)]

    async def put_many(self, items: Mapping[str, V]) -> None:
        for key, value in items.items():
            self.memory.put(key, value)
        if self.redis is not None and items:
            await self.redis.put_many({key: self._to_vector(value) for key, value in items.items()})
