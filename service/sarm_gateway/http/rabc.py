"""RA-BC jobs over HTTP: weights for a dataset under the server's data root, computed in the background.

POST a job (202 and its id), poll it (state, episodes done / total), download its results as parquet, or cancel
it. Any replica answers for any job when the job store is Redis (sarm_gateway.jobs)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from sarm.rabc.weights import RabcParams
from sarm_gateway.auth import Operation
from sarm_gateway.errors import InvalidInput
from sarm_gateway.http.deps import authorized
from sarm_gateway.http.schemas import MEDIA_TYPES, problems
from sarm_gateway.jobs.records import RESULT_FILES, Job
from sarm_gateway.jobs.runner import JobRunner

router = APIRouter(prefix="/v1/rabc", tags=["rabc"], dependencies=[authorized(Operation.RABC)])

JobId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="The id POST /v1/rabc/jobs returned.")]
ResultName = Literal["progress", "weights"]  # the keys of RESULT_FILES


async def _runner(request: Request) -> JobRunner:
    jobs: JobRunner = request.app.state.deps.jobs
    return jobs


RunnerDep = Annotated[JobRunner, Depends(_runner)]


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(
        min_length=1,
        max_length=4096,
        description="A LeRobot dataset folder, relative to the server's data root (SARM_DATA_ROOT).",
    )
    chunk_size: int = Field(ge=1, le=100_000, description="Δ: the policy's action-chunk length, in frames.")
    kappa: float = Field(0.01, ge=0, le=1e6, description="κ: progress gains above it weigh 1.")
    eps: float = Field(1e-6, gt=0, le=1, description="ε in the soft weight's denominator.")
    stats: Literal["global", "running"] = Field("global", description="μ, σ over the whole dataset, or running.")
    stride: int = Field(1, ge=1, le=100_000, description="Score every N-th frame and interpolate between.")

    def params(self) -> RabcParams:
        return RabcParams(self.chunk_size, self.kappa, self.eps, self.stats)


class JobStatus(BaseModel):
    id: str
    dataset: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    params: dict[str, Any]
    episodes_done: int
    episodes_total: int | None = Field(description="Known once the job has opened the dataset.")
    error: str | None = Field(description="Why the job failed.")
    summary: dict[str, Any] | None = Field(
        description="Mean weight, share of zero weights, δ mean/std, μ, σ, and "
        "each episode's mean weight, once the job has succeeded."
    )
    created_at: float
    heartbeat_at: float = Field(description="When the replica working on it last saved its state (Unix time).")
    results: dict[str, str] = Field(description="Download paths of the results, once the job has succeeded.")

    @classmethod
    def of(cls, job: Job) -> JobStatus:
        succeeded = job.state == "succeeded"
        results = {name: f"/v1/rabc/jobs/{job.id}/results/{name}" for name in RESULT_FILES} if succeeded else {}
        return cls(**asdict(job), results=results)


@router.post(
    "/jobs", operation_id="createRabcJob", status_code=202, responses=problems(400, 401, 403, 404, 422, 429, 503)
)  # 400: a body that is not JSON
async def create_job(body: JobRequest, jobs: RunnerDep, response: Response) -> JobStatus:
    """Start computing RA-BC weights for a dataset: 202 with the job (poll `GET /v1/rabc/jobs/{id}`). 403 for a
    dataset outside the data root, 404 when this server runs no jobs (the message says what to set)."""
    try:
        params = body.params()
    except ValueError as error:  # RabcParams' own checks, beyond the schema's
        raise InvalidInput(str(error)) from error
    job = await jobs.submit(body.dataset, params, body.stride)
    response.headers["Location"] = f"/v1/rabc/jobs/{job.id}"
    return JobStatus.of(job)


@router.get("/jobs/{job_id}", operation_id="getRabcJob", responses=problems(401, 403, 404, 422, 503))
async def get_job(job_id: JobId, jobs: RunnerDep) -> JobStatus:
    """A job's state and progress (episodes done of the total)."""
    return JobStatus.of(await jobs.status(job_id))


@router.post(
    "/jobs/{job_id}:cancel", operation_id="cancelRabcJob", status_code=202, responses=problems(401, 403, 404, 422, 503)
)
async def cancel_job(job_id: JobId, jobs: RunnerDep) -> JobStatus:
    """Ask a queued or running job to stop (it stops between episodes and ends `cancelled`); a finished job is
    returned as it is."""
    return JobStatus.of(await jobs.cancel(job_id))


@router.get(
    "/jobs/{job_id}/results/{name}",
    operation_id="getRabcJobResult",
    response_class=Response,
    responses={
        200: {
            "content": {MEDIA_TYPES["parquet"]: {}},
            "description": "progress: sarm_progress.parquet; weights: rabc_weights.parquet",
        },
        **problems(401, 403, 404, 409, 422, 503),
    },
)
async def get_result(job_id: JobId, name: ResultName, jobs: RunnerDep) -> Response:
    """A succeeded job's per-frame progress (LeRobot's sarm_progress.parquet) or weights (409 before it has
    succeeded)."""
    data = await jobs.result(job_id, name)
    return Response(
        data,
        media_type=MEDIA_TYPES["parquet"],
        headers={"Content-Disposition": f'attachment; filename="{RESULT_FILES[name]}"'},
    )
