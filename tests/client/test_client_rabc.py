"""sarm-client's RA-BC jobs against a real gateway's HTTP API: the weights a trainer fetches are the service's file
and the core's formula, progress reaches the callback, failed and abandoned jobs, every refusal as its exception,
and `sarm-client rabc` as a process."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from sarm.encoders.base import TextEncoder
from sarm.rabc.files import read_progress
from sarm.rabc.weights import RabcParams, compute, gain_statistics, weights_from_deltas
from sarm_client import (
    NO_RETRY,
    Conflict,
    DeadlineExceeded,
    InvalidArgument,
    JobFailed,
    NotFound,
    Overloaded,
    PermissionDenied,
    RabcJob,
    RabcJobs,
    RabcWeights,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from tests.client_harness import CLIENT_ROOT
from tests.conftest import synthetic_episode, write_dataset
from tests.gateway_harness import TIMEOUT, RunningGateway, free_port

EPISODES, LENGTH, CHUNK = 3, 24, 4
TOKENS = {"trainer": "trainer-token", "controller": "robot-token"}
NO_JOB = "0" * 32
FAST: dict[str, Any] = {"poll_s": 0.02, "timeout": 120.0}  # wait() and compute() options


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_dataset(root / "demos", [synthetic_episode(LENGTH, seed) for seed in range(EPISODES)])
    (root / "not-a-dataset").mkdir()
    (root / "not-a-dataset" / "notes.txt").write_text("a folder, but no LeRobot dataset")
    return root


@pytest.fixture(scope="module")
def served(cpu_model_repo: Path, text_encoder: TextEncoder, data_root: Path) -> Iterator[RunningGateway]:
    running = RunningGateway(
        cpu_model_repo,
        text_encoder,
        http_port=0,
        data_root=data_root,
        job_heartbeat_s=0.05,
        auth_tokens=TOKENS,
        rabc_max_jobs=2,
    )
    yield running
    running.close()


def client(served: RunningGateway, token: str | None = "trainer-token") -> RabcJobs:
    return RabcJobs(served.http_url, token=token, timeout=Timeout(call=TIMEOUT))


@pytest.fixture
def jobs(served: RunningGateway) -> RabcJobs:
    return client(served)


def ended(jobs: RabcJobs, *job_ids: str) -> list[RabcJob]:
    """Cancel the jobs and wait until each has ended, so that the next test finds the replica idle."""
    for job_id in job_ids:
        jobs.cancel(job_id)
    done = []
    for job_id in job_ids:
        try:
            done.append(jobs.wait(job_id, **FAST))
        except JobFailed as error:
            done.append(error.job)
    return done


def test_fetched_weights_are_the_services_file_and_the_cores_formula(jobs: RabcJobs, tmp_path: Path) -> None:
    seen: list[RabcJob] = []
    job, data = jobs.compute("demos", CHUNK, stride=2, on_progress=seen.append, **FAST)
    assert job.state == "succeeded" and job.params == {
        "chunk_size": CHUNK,
        "kappa": 0.01,
        "eps": 1e-6,
        "stats": "global",
        "stride": 2,
    }
    assert data == jobs.download(job.id, "weights")

    weights = RabcWeights.from_parquet(data)
    served_file = pq.read_table(io.BytesIO(data)).to_pydict()
    for name in ("index", "episode_index", "frame_index", "delta", "weight"):
        np.testing.assert_array_equal(getattr(weights, name), served_file[name])
    assert len(weights.index) == EPISODES * LENGTH and weights.params == RabcParams(CHUNK).to_dict()

    progress_file = tmp_path / "sarm_progress.parquet"
    progress_file.write_bytes(jobs.download(job.id, "progress"))
    progress = read_progress(progress_file)
    core = compute([e.progress for e in progress.episodes], RabcParams(CHUNK))
    indices = np.concatenate([e.index for e in progress.episodes])
    np.testing.assert_allclose(weights.for_indices(indices), np.concatenate(core.weights), atol=1e-6)
    assert weights.metadata["mu"] == pytest.approx(core.mu) and weights.metadata["sigma"] == pytest.approx(core.sigma)

    # The callback saw the job move, once per change, up to the end.
    assert seen[-1].state == "succeeded" and seen[-1].episodes_done == EPISODES
    assert any(j.state == "running" and 0 < j.episodes_done < EPISODES for j in seen), seen
    assert [j.episodes_done for j in seen] == sorted(j.episodes_done for j in seen)
    states = [(j.state, j.episodes_done, j.episodes_total) for j in seen]
    assert len(states) == len(set(states))


def test_weights_with_running_statistics(jobs: RabcJobs) -> None:
    weights = jobs.weights("demos", 3, kappa=0.02, stats="running", stride=3, **FAST)
    assert weights.params == {"chunk_size": 3, "kappa": 0.02, "eps": 1e-6, "stats": "running"}
    mu, sigma = gain_statistics(weights.delta.astype(np.float64), "running")  # the file is in dataset order
    np.testing.assert_allclose(weights.weight, weights_from_deltas(weights.delta, mu, sigma, 0.02, 1e-6), atol=1e-5)
    assert np.all((weights.weight >= 0) & (weights.weight <= 1))


def test_a_failed_job_raises_the_servers_reason(jobs: RabcJobs) -> None:
    with pytest.raises(JobFailed) as failed:
        jobs.weights("not-a-dataset", CHUNK, **FAST)
    job = failed.value.job
    assert job.state == "failed" and "is not a LeRobot dataset" in (job.error or "") and job.results == {}
    assert str(failed.value) == f"RA-BC job {job.id} on 'not-a-dataset' failed: {job.error}"


def test_a_wait_given_up_cancels_the_job(jobs: RabcJobs) -> None:
    seen: list[RabcJob] = []
    with pytest.raises(DeadlineExceeded, match="it goes on"):
        jobs.compute("demos", CHUNK, poll_s=0.01, timeout=0.05, on_progress=seen.append)
    job_id = seen[0].id
    with pytest.raises(Conflict, match="results exist once it has succeeded") as early:
        jobs.download(job_id, "progress")
    assert early.value.http_status == 409 and early.value.code is None
    with pytest.raises(JobFailed, match=f"RA-BC job {job_id} on 'demos' ended cancelled") as cancelled:
        jobs.wait(job_id, **FAST)
    assert cancelled.value.job.state == "cancelled" and cancelled.value.job.episodes_done < EPISODES


def test_too_many_jobs_is_overloaded_with_the_servers_retry_after(jobs: RabcJobs) -> None:
    first, second = (jobs.submit("demos", CHUNK) for _ in range(2))  # rabc_max_jobs=2: one runs, one is queued
    try:
        with pytest.raises(Overloaded, match="SARM_RABC_MAX_JOBS") as refused:
            jobs.submit("demos", CHUNK)
        assert refused.value.retry_after == 30 and refused.value.http_status == 429
    finally:
        assert {job.state for job in ended(jobs, first.id, second.id)} <= {"cancelled", "succeeded"}


def test_unknown_jobs_are_not_found(jobs: RabcJobs) -> None:
    for call in (jobs.status, jobs.cancel, jobs.download):
        with pytest.raises(NotFound, match=f"no job '{NO_JOB}'") as missing:
            call(NO_JOB)
        assert missing.value.http_status == 404 and isinstance(missing.value, LookupError)
    with pytest.raises(InvalidArgument, match=r"path\.job_id: String should match pattern"):
        jobs.status("not-an-id")
    with pytest.raises(InvalidArgument, match=r"path\.name: Input should be 'progress' or 'weights'"):
        jobs.download(NO_JOB, "secrets")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("dataset", "chunk_size", "error", "message"),
    [
        ("demos", 0, InvalidArgument, r"body\.chunk_size: Input should be greater than or equal to 1"),
        ("nope", CHUNK, InvalidArgument, "no dataset folder 'nope' under the data root"),
        ("../", CHUNK, PermissionDenied, "outside the data root"),
    ],
)
def test_bad_requests(jobs: RabcJobs, dataset: str, chunk_size: int, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        jobs.submit(dataset, chunk_size)


def test_auth_errors(served: RunningGateway) -> None:
    for token in (None, "wrong-token"):
        with pytest.raises(Unauthenticated) as unauthenticated:
            client(served, token).submit("demos", CHUNK)
        assert unauthenticated.value.http_status == 401
    with pytest.raises(PermissionDenied, match="may not call rabc") as denied:
        client(served, "robot-token").status(NO_JOB)
    assert denied.value.http_status == 403


def test_an_unreachable_server_is_unavailable() -> None:
    jobs = RabcJobs(f"http://127.0.0.1:{free_port()}", retry=NO_RETRY)
    with pytest.raises(Unavailable, match="cannot reach"):
        jobs.status(NO_JOB)


def sarm_client(*args: str, token: str | None = "trainer-token") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(CLIENT_ROOT)}
    env.pop("SARM_TOKEN", None)
    if token is not None:
        env["SARM_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "sarm_client", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cli_writes_the_weights_and_prints_the_summary(served: RunningGateway, tmp_path: Path) -> None:
    out = tmp_path / "weights.parquet"
    result = sarm_client(
        "rabc",
        "--http",
        served.http_url,
        "demos",
        "--chunk-size",
        str(CHUNK),
        "--stride",
        "2",
        "--poll",
        "0.02",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{EPISODES * LENGTH} frames of {EPISODES} episodes: mean weight ")
    assert result.stdout.rstrip().endswith(f"-> {out}")
    assert f"succeeded, {EPISODES}/{EPISODES} episodes" in result.stderr  # progress lines: stderr is no terminal
    weights = RabcWeights.from_parquet(out)
    assert len(weights.index) == EPISODES * LENGTH and weights.params["chunk_size"] == CHUNK


def test_the_cli_reports_errors_in_one_line(served: RunningGateway, tmp_path: Path) -> None:
    out = tmp_path / "weights.parquet"
    failed = sarm_client(
        "rabc", "--http", served.http_url, "not-a-dataset", "--chunk-size", "5", "--poll", "0.02", "--out", str(out)
    )
    assert failed.returncode == 1 and not out.exists()
    [line] = [line for line in failed.stderr.splitlines() if line.startswith("sarm-client: error:")]
    assert "JobFailed: RA-BC job" in line and "on 'not-a-dataset' failed:" in line and "not a LeRobot dataset" in line
    anonymous = sarm_client(
        "rabc", "--http", served.http_url, "demos", "--chunk-size", "5", "--out", str(out), token=None
    )
    assert anonymous.returncode == 1 and anonymous.stderr.startswith("sarm-client: error: Unauthenticated: ")


def test_ctrl_c_cancels_the_job_and_exits_130(served: RunningGateway, data_root: Path, tmp_path: Path) -> None:
    # A dataset no other test scored (nothing in the gateway's caches) and a held encoder: the job cannot finish
    # before the Ctrl-C reaches the CLI, however fast the machine.
    episodes = [synthetic_episode(LENGTH, seed) for seed in range(EPISODES)]
    for i, episode in enumerate(episodes):  # the synthetic frames only encode time: mark these apart
        next(iter(episode.frames.values()))[:, :4] = 250 - i
    write_dataset(data_root / "held", episodes)
    env = {**os.environ, "PYTHONPATH": str(CLIENT_ROOT), "SARM_TOKEN": "trainer-token"}
    served.backend.gate = asyncio.Event()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sarm_client",
                "rabc",
                "--http",
                served.http_url,
                "held",
                "--chunk-size",
                str(CHUNK),
                "--poll",
                "0.02",
                "--out",
                str(tmp_path / "weights.parquet"),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            # A shell's background job starts with SIGINT ignored, and Python then leaves it so: give the CLI the
            # Ctrl-C a terminal would.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        assert process.stderr is not None
        line = process.stderr.readline()  # the first progress line names the job: "RA-BC job <id>: queued, ..."
        assert line.startswith("RA-BC job "), line
        job_id = line.split()[2].rstrip(":")
        time.sleep(0.5)
        assert client(served).status(job_id).state in ("queued", "running")  # held, as promised
        process.send_signal(signal.SIGINT)
        try:
            _, rest = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError("the CLI did not stop within 60 s of Ctrl-C") from None
        assert process.returncode == 130 and "sarm-client: interrupted" in rest and "Traceback" not in rest
    finally:
        served.open_gate()  # the cancelled job stops at its next check, once its encode is let through
        served.backend.gate = None
    jobs = client(served)
    deadline = time.monotonic() + 60
    while (job := jobs.status(job_id)).state in ("queued", "running"):  # the CLI's cancel, not ours
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert job.state == "cancelled"
    assert not (tmp_path / "weights.parquet").exists()
