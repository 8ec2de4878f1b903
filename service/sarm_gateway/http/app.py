"""The FastAPI application: routes, the engine errors' HTTP statuses, and request metrics."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sarm_gateway.auth import Authenticator
from sarm_gateway.deps import Deps
from sarm_gateway.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InvalidInput,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
)
from sarm_gateway.http import api, ops, rabc
from sarm_gateway.http.instrument import RequestMetrics
from sarm_gateway.jobs.paths import OutsideDataRoot
from sarm_gateway.jobs.runner import JobNotFinished, JobNotFound, JobsDisabled
from sarm_gateway.readiness import Readiness

# Most specific first: the first class an error is an instance of gives its status.
STATUS: dict[type[Exception], int] = {
    OutsideDataRoot: 403,
    JobNotFound: 404,
    JobsDisabled: 404,
    JobNotFinished: 409,
    InvalidInput: 422,
    Unauthenticated: 401,
    PermissionDenied: 403,
    Overloaded: 429,
    BackendUnavailable: 503,
    DeadlineExceeded: 504,
}


async def _engine_error(request: Request, error: Exception) -> JSONResponse:
    headers = {}
    if isinstance(error, Overloaded):
        headers["Retry-After"] = str(math.ceil(error.retry_after_ms / 1000))
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    status = next(code for kind, code in STATUS.items() if isinstance(error, kind))
    return JSONResponse({"detail": str(error)}, status, headers)


def create_app(deps: Deps, readiness: Readiness, api_routes: bool = True) -> FastAPI:
    """The whole HTTP API, or (`api_routes` False) only /livez, /readyz and /metrics."""
    app = FastAPI(
        title="SARM reward service",
        version="1",
        summary="Stage-aware reward model: a video and its instruction → per-frame stage and progress.",
        openapi_url="/openapi.json" if api_routes else None,
        docs_url="/docs" if api_routes else None,
        redoc_url=None,
    )
    app.state.deps, app.state.readiness = deps, readiness
    app.state.auth = Authenticator(deps.settings.auth_tokens)
    for kind in STATUS:
        app.add_exception_handler(kind, _engine_error)
    app.add_middleware(RequestMetrics, metrics=deps.metrics)
    app.include_router(ops.router)
    if api_routes:
        app.include_router(api.router)
        app.include_router(rabc.router)
    return app
