"""Where job records, cancel requests and result files live: this process's memory, or Redis (any replica can
answer for any job, and a job's state and results outlive the replica that ran it). Every entry has a TTL."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError

from sarm.scoring.cache import TTLCache
from sarm_gateway.errors import BackendUnavailable
from sarm_gateway.jobs.records import Job


class JobStoreUnavailable(BackendUnavailable):
    """The job store (Redis) cannot be reached: job calls fail with 503 until it is back."""


class JobStore(ABC):
    @abstractmethod
    async def save(self, job: Job) -> None: ...

    @abstractmethod
    async def load(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def request_cancel(self, job_id: str) -> None: ...

    @abstractmethod
    async def cancel_requested(self, job_id: str) -> bool: ...

    @abstractmethod
    async def put_file(self, job_id: str, name: str, data: bytes) -> None: ...

    @abstractmethod
    async def get_file(self, job_id: str, name: str) -> bytes | None: ...


class MemoryJobStore(JobStore):
    def __init__(self, ttl_s: float, max_jobs: int = 1000) -> None:
        self._jobs: TTLCache[str] = TTLCache(max_jobs, ttl_s)  # JSON, so a caller never holds a live record
        self._cancels: TTLCache[bool] = TTLCache(max_jobs, ttl_s)
        self._files: TTLCache[bytes] = TTLCache(max_jobs * 2, ttl_s)

    async def save(self, job: Job) -> None:
        self._jobs.put(job.id, job.to_json())

    async def load(self, job_id: str) -> Job | None:
        text = self._jobs.get(job_id)
        return None if text is None else Job.from_json(text)

    async def request_cancel(self, job_id: str) -> None:
        self._cancels.put(job_id, True)

    async def cancel_requested(self, job_id: str) -> bool:
        return self._cancels.get(job_id) is not None

    async def put_file(self, job_id: str, name: str, data: bytes) -> None:
        self._files.put(f"{job_id}/{name}", data)

    async def get_file(self, job_id: str, name: str) -> bytes | None:
        return self._files.get(f"{job_id}/{name}")


class RedisJobStore(JobStore):
    def __init__(self, client: Redis, ttl_s: float, prefix: str = "sarm:job:") -> None:
        self._client = client
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._prefix = prefix

    @asynccontextmanager
    async def _redis(self) -> AsyncIterator[Redis]:
        try:
            yield self._client
        except (RedisError, OSError) as error:  # OSError covers asyncio's TimeoutError
            raise JobStoreUnavailable(
                f"the job store (Redis) is unavailable: {error or type(error).__name__}; retry shortly"
            ) from error

    async def save(self, job: Job) -> None:
        async with self._redis() as redis:
            await redis.set(self._prefix + job.id, job.to_json(), px=self._ttl_ms)

    async def load(self, job_id: str) -> Job | None:
        async with self._redis() as redis:
            text = await redis.get(self._prefix + job_id)
        return None if text is None else Job.from_json(text)

    async def request_cancel(self, job_id: str) -> None:
        async with self._redis() as redis:
            await redis.set(f"{self._prefix}{job_id}:cancel", str(time.time()), px=self._ttl_ms)

    async def cancel_requested(self, job_id: str) -> bool:
        async with self._redis() as redis:
            return bool(await redis.exists(f"{self._prefix}{job_id}:cancel"))

    async def put_file(self, job_id: str, name: str, data: bytes) -> None:
        async with self._redis() as redis:
            await redis.set(f"{self._prefix}{job_id}:file:{name}", data, px=self._ttl_ms)

    async def get_file(self, job_id: str, name: str) -> bytes | None:
        async with self._redis() as redis:
            data = await redis.get(f"{self._prefix}{job_id}:file:{name}")
        return data if isinstance(data, bytes) else None
