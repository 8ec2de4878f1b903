"""Runs RA-BC jobs in the background of the gateway process.

Each job computes in a worker thread (`sarm.rabc.pipeline.run_rabc`: per-frame progress, weights, files) that scores
on the gateway's own engine (its backend, local ONNX Runtime or Triton, its batching and instruction cache), while
a coroutine beside it saves its progress every heartbeat and watches for a cancel request (which may come
through another replica, via the store). At most `rabc_workers` jobs compute at once; the rest wait, queued.
A job whose heartbeat stops while it is active, and which no thread here works on, died with its replica.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sarm.data.validate import InvalidDatasetError
from sarm.encoders.base import EncoderMismatchError
from sarm.rabc.pipeline import run_rabc
from sarm.rabc.progress import Cancelled, EngineHandle
from sarm.rabc.weights import RabcParams, RabcSummary
from sarm.scoring.engine import Engine
from sarm.training.checkpoint import CheckpointError
from sarm_gateway.errors import InvalidInput, Overloaded
from sarm_gateway.jobs.paths import dataset_dir
from sarm_gateway.jobs.records import ACTIVE, RESULT_FILES, Job, JobState
from sarm_gateway.jobs.store import JobStore
from sarm_gateway.settings import Settings

log = logging.getLogger(__name__)

# What a job can fail of that is the dataset's or the request's doing: the message goes to the caller as it is.
EXPECTED_FAILURES = (ValueError, FileNotFoundError, CheckpointError, InvalidDatasetError, EncoderMismatchError)


class JobsDisabled(RuntimeError):
    """This replica runs no jobs (no data root); the message says why."""


class JobNotFound(LookupError):
    pass


class JobNotFinished(RuntimeError):
    """Results were asked of a job that has not succeeded."""


class JobRunner:
    def __init__(self, settings: Settings, store: JobStore, engine: Engine) -> None:
        self.settings = settings
        self.store = store
        self._engine = engine
        self.disabled_reason: str | None = None
        if settings.data_root is None:
            self.disabled_reason = "RA-BC jobs are off on this server: set SARM_DATA_ROOT to the datasets' folder"
        self._pool = ThreadPoolExecutor(settings.rabc_workers, thread_name_prefix="sarm-rabc")
        self._slots = asyncio.Semaphore(settings.rabc_workers)
        self._stops: dict[str, threading.Event] = {}  # jobs of this replica, queued or running
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, dataset: str, params: RabcParams, stride: int) -> Job:
        if self.disabled_reason is not None or self.settings.data_root is None:
            raise JobsDisabled(self.disabled_reason)
        folder = dataset_dir(self.settings.data_root, dataset)
        if stride < 1:
            raise InvalidInput(f"stride must be >= 1 frame, got {stride}")
        if len(self._stops) >= self.settings.rabc_max_jobs:
            raise Overloaded(
                f"{len(self._stops)} jobs are queued or running on this replica (limit "
                f"{self.settings.rabc_max_jobs}, SARM_RABC_MAX_JOBS); retry later",
                30_000,
            )
        job = Job(id=uuid.uuid4().hex, dataset=dataset, params={**params.to_dict(), "stride": stride})
        await self.store.save(job)
        stop = threading.Event()
        self._stops[job.id] = stop
        task = asyncio.get_running_loop().create_task(self._run(job, folder, params, stride, stop))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def status(self, job_id: str) -> Job:
        job = await self.store.load(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} (unknown, or expired after SARM_JOB_TTL_S)")
        silent = time.time() - job.heartbeat_at
        if job.state in ACTIVE and job.id not in self._stops and silent > self.settings.job_lease_s:
            job.state = JobState.FAILED
            job.error = f"the replica running this job stopped ({silent:.0f} s without a heartbeat); submit it again"
        return job

    async def cancel(self, job_id: str) -> Job:
        job = await self.status(job_id)
        if job.state in ACTIVE:
            await self.store.request_cancel(job_id)
            stop = self._stops.get(job_id)
            if stop is not None:  # ours: stop at once rather than at the next heartbeat
                stop.set()
        return job

    async def result(self, job_id: str, name: str) -> bytes:
        if name not in RESULT_FILES:
            raise JobNotFound(f"no result {name!r}: a job's results are {', '.join(RESULT_FILES)}")
        job = await self.status(job_id)
        if job.state != JobState.SUCCEEDED:
            raise JobNotFinished(f"job {job_id} is {job.state.value}; results exist once it has succeeded")
        data = await self.store.get_file(job_id, RESULT_FILES[name])
        if data is None:
            raise JobNotFound(f"the {name} results of job {job_id} have expired (SARM_JOB_TTL_S)")
        return data

    async def close(self) -> None:
        """Stop every job of this replica (they end cancelled) and wait for them to save their state."""
        for stop in self._stops.values():
            stop.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, job: Job, folder: Path, params: RabcParams, stride: int, stop: threading.Event) -> None:
        out_dir = Path(tempfile.mkdtemp(prefix=f"sarm-rabc-{job.id}-"))
        beat = asyncio.get_running_loop().create_task(self._beat(job, stop))
        try:
            async with self._slots:
                if stop.is_set():
                    raise Cancelled()
                job.state = JobState.RUNNING
                await self._save(job)
                summary = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._compute, job, folder, params, stride, out_dir, stop, asyncio.get_running_loop()
                )
            for name in RESULT_FILES.values():
                await self.store.put_file(job.id, name, (out_dir / name).read_bytes())
            job.summary = summary.to_dict()
            job.state = JobState.SUCCEEDED
        except Cancelled:
            job.state = JobState.CANCELLED
        except EXPECTED_FAILURES as error:
            job.state, job.error = JobState.FAILED, str(error)
        except Exception as error:  # a bug, or the store gone: the job fails, the server goes on
            log.exception("RA-BC job %s failed", job.id)
            job.state, job.error = JobState.FAILED, f"internal error: {type(error).__name__}: {error}"
        finally:
            beat.cancel()
            self._stops.pop(job.id, None)
            shutil.rmtree(out_dir, ignore_errors=True)
            await self._save(job)

    def _compute(
        self,
        job: Job,
        folder: Path,
        params: RabcParams,
        stride: int,
        out_dir: Path,
        stop: threading.Event,
        loop: asyncio.AbstractEventLoop,
    ) -> RabcSummary:
        def on_episode(done: int, total: int) -> None:  # from this thread; the heartbeat saves it
            job.episodes_done, job.episodes_total = done, total

        def run(coroutine: Coroutine[Any, Any, Any]) -> Any:  # the engine lives on the gateway's loop
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

        checkpoint = Path(self._engine.manifest.checkpoint.path)  # provenance only: the engine holds the model
        return run_rabc(
            folder, checkpoint, params, out_dir, stride, on_episode, stop.is_set, engine=EngineHandle(self._engine, run)
        )

    async def _beat(self, job: Job, stop: threading.Event) -> None:
        while True:
            await asyncio.sleep(self.settings.job_heartbeat_s)
            try:
                if await self.store.cancel_requested(job.id):
                    stop.set()
            except Exception:  # the store's trouble must not end the job; the final save reports it
                log.warning("RA-BC job %s: cannot read cancel requests", job.id, exc_info=True)
            await self._save(job)

    async def _save(self, job: Job) -> None:
        job.heartbeat_at = time.time()
        try:
            await self.store.save(job)
        except Exception:
            log.warning("RA-BC job %s: cannot save its state", job.id, exc_info=True)
