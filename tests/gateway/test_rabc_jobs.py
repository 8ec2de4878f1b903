"""RA-BC jobs behind the service: data-root confinement, progress, results, cancel, queue bound, and state shared
through a real Redis (another replica answers; a job outlives the replica that ran it; a dead replica's job
is reported failed)."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sarm.encoders.base import TextEncoder
from sarm.rabc.weights import RabcParams
from sarm.scoring.engine import Engine
from sarm.scoring.options import EngineOptions
from sarm.scoring.redis_cache import connect
from sarm_gateway.errors import InvalidInput, Overloaded
from sarm_gateway.jobs.paths import OutsideDataRoot, dataset_dir
from sarm_gateway.jobs.records import Job, JobState
from sarm_gateway.jobs.runner import JobNotFinished, JobNotFound, JobRunner, JobsDisabled
from sarm_gateway.jobs.store import JobStore, MemoryJobStore, RedisJobStore
from sarm_gateway.settings import Settings
from tests.conftest import synthetic_episode, write_dataset
from tests.redis_server import RedisServer

EPISODES = 6
LENGTH = 40
PARAMS = RabcParams(chunk_size=5)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(root / "demos", [synthetic_episode(LENGTH, seed) for seed in range(EPISODES)])
    (root / "not-a-dataset").mkdir()
    return root


def runner(settings: Settings, store: JobStore, repo: Path, text_encoder: TextEncoder) -> JobRunner:
    """A runner scoring on an engine of its own over `repo` (as a gateway's jobs score on the gateway's engine)."""
    return JobRunner(settings, store, Engine.open(repo, EngineOptions(), text_encoder=text_encoder))


def settings_for(data_root: Path, **overrides: object) -> Settings:
    return Settings(data_root=data_root, job_heartbeat_s=0.05, **overrides)  # type: ignore[arg-type]


async def finished(jobs: JobRunner, job_id: str, timeout: float = 120) -> tuple[Job, list[tuple[str, int]]]:
    """Poll until the job ends; also returns every (state, episodes done) seen on the way."""
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + timeout
    while True:
        job = await jobs.status(job_id)
        seen.append((job.state.value, job.episodes_done))
        if job.state not in (JobState.QUEUED, JobState.RUNNING):
            return job, seen
        assert time.monotonic() < deadline, f"job still {job.state} after {timeout} s"
        await asyncio.sleep(0.02)


def test_dataset_paths_stay_under_the_data_root(data_root: Path, tmp_path: Path) -> None:
    assert dataset_dir(data_root, "demos") == (data_root / "demos").resolve()
    assert dataset_dir(data_root, "./demos/") == (data_root / "demos").resolve()
    (tmp_path / "secret").mkdir()
    link = data_root / "escape"
    link.symlink_to(tmp_path / "secret")
    try:
        for attempt in ("../", "..", "demos/../../", str(tmp_path / "secret"), "/etc", "escape", "escape/."):
            with pytest.raises(OutsideDataRoot, match="outside the data root"):
                dataset_dir(data_root, attempt)
    finally:
        link.unlink()
    for missing in ("nope", "demos/meta/info.json"):
        with pytest.raises(InvalidInput, match="no dataset folder"):
            dataset_dir(data_root, missing)
    for empty in ("", "  ", "demos\x00"):
        with pytest.raises(InvalidInput):
            dataset_dir(data_root, empty)


@pytest.mark.asyncio
async def test_a_job_reports_progress_and_its_results_download(
    data_root: Path, cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    jobs = runner(settings_for(data_root), MemoryJobStore(60), cpu_model_repo, text_encoder)
    try:
        job = await jobs.submit("demos", PARAMS, stride=2)
        assert job.state == JobState.QUEUED and job.params == {**PARAMS.to_dict(), "stride": 2}
        with pytest.raises(JobNotFinished, match="results exist once it has succeeded"):
            await jobs.result(job.id, "weights")
        done, seen = await finished(jobs, job.id)
        assert done.state == JobState.SUCCEEDED, done.error
        assert (done.episodes_done, done.episodes_total) == (EPISODES, EPISODES)
        moving = sorted({n for state, n in seen if state == "running"})
        assert len(moving) >= 3 and moving[0] < EPISODES, f"progress never seen moving: {seen}"
        progress = pq.read_table(io.BytesIO(await jobs.result(job.id, "progress")))
        assert progress.column_names[:4] == ["index", "episode_index", "frame_index", "progress_sparse"]
        assert progress.num_rows == EPISODES * LENGTH
        weights = pq.read_table(io.BytesIO(await jobs.result(job.id, "weights"))).to_pydict()
        assert np.all((np.array(weights["weight"]) >= 0) & (np.array(weights["weight"]) <= 1))
        assert done.summary is not None and done.summary["frames"] == EPISODES * LENGTH
        assert set(done.summary["episode_mean_weights"]) == {str(i) for i in range(EPISODES)}
        with pytest.raises(JobNotFound, match="results are progress, weights"):
            await jobs.result(job.id, "../etc/passwd")
        with pytest.raises(JobNotFound, match="no job"):
            await jobs.status("0" * 32)
    finally:
        await jobs.close()


@pytest.mark.asyncio
async def test_a_cancelled_job_stops_between_episodes(
    data_root: Path, cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    jobs = runner(settings_for(data_root), MemoryJobStore(60), cpu_model_repo, text_encoder)
    try:
        job = await jobs.submit("demos", PARAMS, stride=1)
        while (await jobs.status(job.id)).episodes_done < 1:
            await asyncio.sleep(0.01)
        await jobs.cancel(job.id)
        done, _ = await finished(jobs, job.id)
        assert done.state == JobState.CANCELLED and done.episodes_done < EPISODES
        with pytest.raises(JobNotFinished, match="is cancelled"):
            await jobs.result(job.id, "progress")
        assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"sarm-rabc-{job.id}-*"))  # work dir removed
    finally:
        await jobs.close()


@pytest.mark.asyncio
async def test_bad_requests_and_the_queue_bound(
    data_root: Path, cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    jobs = runner(settings_for(data_root, rabc_max_jobs=1), MemoryJobStore(60), cpu_model_repo, text_encoder)
    try:
        with pytest.raises(OutsideDataRoot):
            await jobs.submit("../..", PARAMS, 1)
        with pytest.raises(InvalidInput, match="stride"):
            await jobs.submit("demos", PARAMS, 0)
        bad = await jobs.submit("not-a-dataset", PARAMS, 1)  # a folder, but no LeRobot dataset: the job fails
        with pytest.raises(Overloaded, match="SARM_RABC_MAX_JOBS"):
            await jobs.submit("demos", PARAMS, 1)
        done, _ = await finished(jobs, bad.id)
        assert done.state == JobState.FAILED and "info.json" in (done.error or "")
    finally:
        await jobs.close()


@pytest.mark.asyncio
async def test_jobs_are_off_without_a_data_root(cpu_model_repo: Path, text_encoder: TextEncoder) -> None:
    off = runner(Settings(), MemoryJobStore(60), cpu_model_repo, text_encoder)
    with pytest.raises(JobsDisabled, match="SARM_DATA_ROOT"):
        await off.submit("demos", PARAMS, 1)
    await off.close()


@pytest.mark.asyncio
async def test_replicas_share_jobs_through_redis(
    redis_server: RedisServer, data_root: Path, cpu_model_repo: Path, text_encoder: TextEncoder
) -> None:
    settings = settings_for(data_root, redis_url=redis_server.url)

    def replica() -> JobRunner:
        client = connect(settings, settings.job_redis_timeout_ms)
        assert client is not None
        return runner(settings, RedisJobStore(client, 60), cpu_model_repo, text_encoder)

    first, second = replica(), replica()
    try:
        job = await first.submit("demos", PARAMS, stride=2)
        done, seen = await finished(second, job.id)  # the other replica follows it
        assert done.state == JobState.SUCCEEDED and any(state == "running" for state, _ in seen)
        assert await second.result(job.id, "weights") == await first.result(job.id, "weights")
        assert 0 < redis_server.client.ttl(f"sarm:job:{job.id}") <= 60
        # Cancelled through the replica that does not run it: the request travels through Redis.
        slow = await first.submit("demos", PARAMS, stride=1)
        while (await second.status(slow.id)).episodes_done < 1:
            await asyncio.sleep(0.01)
        await second.cancel(slow.id)
        stopped, _ = await finished(second, slow.id)
        assert stopped.state == JobState.CANCELLED and stopped.episodes_done < EPISODES
    finally:
        await first.close()
    # A fresh replica after the first one is gone: state and results are still there.
    third = replica()
    assert (await third.status(job.id)).state == JobState.SUCCEEDED
    assert len(await third.result(job.id, "progress")) > 0
    # A job whose replica died mid-run (its heartbeat stopped) is reported failed, not running forever.
    orphan = Job(id="f" * 32, dataset="demos", params={}, state=JobState.RUNNING, heartbeat_at=time.time() - 120)
    redis_server.client.set(f"sarm:job:{orphan.id}", orphan.to_json())
    lost = await third.status(orphan.id)
    assert lost.state == JobState.FAILED and "replica running this job stopped" in (lost.error or "")
    await second.close()
    await third.close()


@pytest.mark.asyncio
async def test_redis_down_is_a_clear_unavailable(
    cpu_model_repo: Path, data_root: Path, text_encoder: TextEncoder
) -> None:
    from sarm_gateway.jobs.store import JobStoreUnavailable
    from tests.gateway_harness import free_port

    settings = settings_for(data_root, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    client = connect(settings, 200)
    assert client is not None
    jobs = runner(settings, RedisJobStore(client, 60), cpu_model_repo, text_encoder)
    with pytest.raises(JobStoreUnavailable, match=r"job store \(Redis\) is unavailable"):
        await jobs.status("a" * 32)
    with pytest.raises(JobStoreUnavailable):
        await jobs.submit("demos", PARAMS, 1)
    await jobs.close()
    await client.aclose()
