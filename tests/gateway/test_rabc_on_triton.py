"""Dataset labelling on Triton: `sarm rabc --backend triton` and an RA-BC job of a Triton-backed gateway score on a
real tritonserver (the exported graphs there, not the checkpoint in this process) and write what the local backend
writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sarm.cli import app
from sarm.encoders.base import TextEncoder
from sarm.rabc.files import read_progress
from sarm.rabc.weights import RabcParams
from sarm.scoring.engine import Engine
from sarm.scoring.options import EngineOptions
from sarm.scoring.repository import repository_for
from sarm.triton import TritonServer
from sarm_gateway.jobs.records import JobState
from sarm_gateway.jobs.runner import JobRunner
from sarm_gateway.jobs.store import MemoryJobStore
from sarm_gateway.settings import Settings
from tests.conftest import synthetic_episode, write_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_dataset(root / "demos", [synthetic_episode(n, seed, size=(48, 64)) for seed, n in enumerate((25, 18))])
    return root


@pytest.fixture(scope="module")
def triton(sarm_checkpoint: Path) -> Iterator[TritonServer]:
    """Triton serving the repository `sarm rabc` exports from the checkpoint (what a deployment serves)."""
    with TritonServer(repository_for(sarm_checkpoint)) as server:
        yield server


def label(data_root: Path, checkpoint: Path, out: Path, *backend: str) -> np.ndarray:
    result = runner.invoke(
        app,
        [
            "rabc",
            str(data_root / "demos"),
            "--checkpoint",
            str(checkpoint),
            "--chunk-size",
            "5",
            "--out",
            str(out),
            *backend,
        ],
    )
    assert result.exit_code == 0, result.output
    return np.concatenate([e.progress for e in read_progress(out / "sarm_progress.parquet").episodes])


def test_sarm_rabc_on_triton_writes_what_the_local_backend_writes(
    triton: TritonServer, data_root: Path, sarm_checkpoint: Path, tmp_path: Path
) -> None:
    local = label(data_root, sarm_checkpoint, tmp_path / "local")
    served = label(
        data_root, sarm_checkpoint, tmp_path / "triton", "--backend", "triton", "--triton-url", triton.endpoints.grpc
    )
    np.testing.assert_allclose(served, local, atol=1e-5)
    # Triton gone: one line, exit 2, no traceback.
    gone = runner.invoke(
        app,
        [
            "rabc",
            str(data_root / "demos"),
            "--checkpoint",
            str(sarm_checkpoint),
            "--chunk-size",
            "5",
            "--out",
            str(tmp_path / "gone"),
            "--backend",
            "triton",
            "--triton-url",
            "127.0.0.1:1",
        ],
    )
    assert gone.exit_code == 2 and "Triton" in gone.output and "Traceback" not in gone.output


@pytest.fixture(scope="module")
def local_progress(data_root: Path, sarm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    return label(data_root, sarm_checkpoint, tmp_path_factory.mktemp("local") / "out")


@pytest.mark.asyncio
async def test_a_job_of_a_triton_backed_gateway_scores_on_triton(
    triton: TritonServer,
    data_root: Path,
    sarm_checkpoint: Path,
    text_encoder: TextEncoder,
    tmp_path: Path,
    local_progress: np.ndarray,
) -> None:
    options = EngineOptions(backend="triton", triton_url=triton.endpoints.grpc)
    engine = Engine.open(repository_for(sarm_checkpoint), options, text_encoder=text_encoder)
    assert engine.backend.name == "triton"
    jobs = JobRunner(Settings(data_root=data_root, job_heartbeat_s=0.05), MemoryJobStore(60), engine)
    try:
        job = await jobs.submit("demos", RabcParams(chunk_size=5), 1)
        deadline = time.monotonic() + 120
        while (job := await jobs.status(job.id)).state in (JobState.QUEUED, JobState.RUNNING):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert job.state == JobState.SUCCEEDED, job.error
        (tmp_path / "job.parquet").write_bytes(await jobs.result(job.id, "progress"))
    finally:
        await jobs.close()
        await engine.close()
    from_job = np.concatenate([e.progress for e in read_progress(tmp_path / "job.parquet").episodes])
    np.testing.assert_allclose(from_job, local_progress, atol=1e-5)
