"""RA-BC jobs over HTTP on a real gateway (uvicorn + httpx): create, watch progress move, download, cancel, and
refusals (outside the data root, bad parameters, unknown jobs, results too early, auth, jobs off)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from sarm.encoders.base import TextEncoder
from tests.conftest import synthetic_episode, write_dataset
from tests.gateway_harness import TIMEOUT, RunningGateway

EPISODES, LENGTH = 5, 40
TOKENS = {"trainer": "trainer-token", "controller": "robot-token"}
TRAINER = {"authorization": "Bearer trainer-token"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_dataset(root / "demos", [synthetic_episode(LENGTH, seed) for seed in range(EPISODES)])
    return root


@pytest.fixture(scope="module")
def served(cpu_model_repo: Path, text_encoder: TextEncoder, data_root: Path) -> Iterator[RunningGateway]:
    running = RunningGateway(
        cpu_model_repo, text_encoder, http_port=0, data_root=data_root, job_heartbeat_s=0.05, auth_tokens=TOKENS
    )
    yield running
    running.close()


@pytest.fixture
def client(served: RunningGateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.http_url, timeout=TIMEOUT, headers=TRAINER) as http:
        yield http


def wait_done(client: httpx.Client, job_id: str) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 120
    while True:
        reply = client.get(f"/v1/rabc/jobs/{job_id}")
        assert reply.status_code == 200, reply.text
        job = reply.json()
        seen.append((job["state"], job["episodes_done"]))
        if job["state"] not in ("queued", "running"):
            return job, seen
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_job_runs_reports_progress_and_serves_its_results(client: httpx.Client) -> None:
    reply = client.post("/v1/rabc/jobs", json={"dataset": "demos", "chunk_size": 5, "stride": 2})
    assert reply.status_code == 202, reply.text
    job = reply.json()
    assert reply.headers["location"] == f"/v1/rabc/jobs/{job['id']}" and job["state"] == "queued"
    assert job["params"] == {"chunk_size": 5, "kappa": 0.01, "eps": 1e-6, "stats": "global", "stride": 2}
    early = client.get(f"/v1/rabc/jobs/{job['id']}/results/weights")
    assert early.status_code in (409, 200)  # 409 unless it already finished (it is small)
    done, seen = wait_done(client, job["id"])
    assert done["state"] == "succeeded", done["error"]
    assert (done["episodes_done"], done["episodes_total"]) == (EPISODES, EPISODES)
    assert len({n for state, n in seen if state == "running"}) >= 2, f"progress never seen moving: {seen}"
    assert 0 <= done["summary"]["mean_weight"] <= 1 and done["summary"]["frames"] == EPISODES * LENGTH
    progress = client.get(done["results"]["progress"])
    assert progress.status_code == 200 and progress.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(progress.content))
    assert table.column_names[:4] == ["index", "episode_index", "frame_index", "progress_sparse"]
    weights = pq.read_table(io.BytesIO(client.get(done["results"]["weights"]).content)).to_pydict()
    assert len(weights["weight"]) == EPISODES * LENGTH and np.all(np.array(weights["weight"]) <= 1)


def test_a_cancelled_job_stops(client: httpx.Client) -> None:
    job = client.post("/v1/rabc/jobs", json={"dataset": "demos", "chunk_size": 5}).json()
    while client.get(f"/v1/rabc/jobs/{job['id']}").json()["episodes_done"] < 1:
        time.sleep(0.01)
    assert client.post(f"/v1/rabc/jobs/{job['id']}:cancel").status_code == 202
    done, _ = wait_done(client, job["id"])
    assert done["state"] == "cancelled" and done["episodes_done"] < EPISODES and done["results"] == {}
    assert client.get(f"/v1/rabc/jobs/{job['id']}/results/progress").status_code == 409


@pytest.mark.parametrize("dataset", ["../", "/etc", "demos/../../", "%2e%2e/x"])
def test_datasets_outside_the_data_root_are_refused(client: httpx.Client, dataset: str) -> None:
    reply = client.post("/v1/rabc/jobs", json={"dataset": dataset, "chunk_size": 5})
    if dataset.startswith("%"):  # not decoded: a folder name that does not exist
        assert reply.status_code == 422 and "no dataset folder" in reply.json()["detail"]
    else:
        assert reply.status_code == 403 and "outside the data root" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"dataset": "demos"}, 422),  # no chunk size
        ({"dataset": "demos", "chunk_size": 0}, 422),
        ({"dataset": "demos", "chunk_size": 5, "stats": "median"}, 422),
        ({"dataset": "demos", "chunk_size": 5, "kappa": -1}, 422),
        ({"dataset": "demos", "chunk_size": 5, "unknown": 1}, 422),
        ({"dataset": "nope", "chunk_size": 5}, 422),
    ],
)
def test_bad_job_requests(client: httpx.Client, body: dict[str, Any], status: int) -> None:
    assert client.post("/v1/rabc/jobs", json=body).status_code == status


def test_unknown_jobs_and_results(client: httpx.Client) -> None:
    assert client.get(f"/v1/rabc/jobs/{'0' * 32}").status_code == 404
    assert client.get("/v1/rabc/jobs/not-an-id").status_code == 422
    assert client.post(f"/v1/rabc/jobs/{'0' * 32}:cancel").status_code == 404
    assert client.get(f"/v1/rabc/jobs/{'0' * 32}/results/secrets").status_code == 422


def test_jobs_need_the_trainer_role(served: RunningGateway) -> None:
    with httpx.Client(base_url=served.http_url, timeout=TIMEOUT) as anonymous:
        reply = anonymous.post("/v1/rabc/jobs", json={"dataset": "demos", "chunk_size": 5})
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
        reply = anonymous.get(f"/v1/rabc/jobs/{'0' * 32}", headers={"authorization": "Bearer robot-token"})
        assert reply.status_code == 403 and "may not call rabc" in reply.json()["detail"]


def test_jobs_off_without_a_data_root(cpu_model_repo: Path, text_encoder: TextEncoder) -> None:
    running = RunningGateway(cpu_model_repo, text_encoder, http_port=0)
    try:
        with httpx.Client(base_url=running.http_url, timeout=TIMEOUT) as http:
            reply = http.post("/v1/rabc/jobs", json={"dataset": "demos", "chunk_size": 5})
        assert reply.status_code == 404 and "SARM_DATA_ROOT" in reply.json()["detail"]
    finally:
        running.close()
