"""Operational endpoints, never behind auth: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from sarm_gateway.http.deps import EngineDep, ReadinessDep
from sarm_gateway.http.schemas import Status

router = APIRouter(tags=["operations"])


@router.get("/livez", operation_id="livez")
async def livez() -> Status:
    """200 while the process serves requests at all."""
    return Status(status="alive")


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Status,
    responses={503: {"model": Status, "description": "Not ready"}},
)
async def readyz(readiness: ReadinessDep) -> JSONResponse:
    """200 while the backend can run the models and no drain has begun; 503 otherwise."""
    return JSONResponse({"status": readiness.reason}, 200 if readiness.ready else 503)


@router.get(
    "/metrics",
    operation_id="metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(engine: EngineDep) -> Response:
    """Every metric of both front ends and the engine, in the Prometheus text format."""
    return Response(engine.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
