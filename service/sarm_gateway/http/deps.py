"""FastAPI dependencies as Annotated aliases: the gateway's shared objects (kept on app.state) and the bearer-token
check, which is the gRPC front end's Authenticator with the same roles."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sarm.scoring.engine import Engine
from sarm_gateway.auth import Authenticator, Operation
from sarm_gateway.deps import Deps
from sarm_gateway.readiness import Readiness
from sarm_gateway.settings import Settings


async def _deps(request: Request) -> Deps:
    return request.app.state.deps


async def _engine(request: Request) -> Engine:
    return request.app.state.deps.engine


async def _settings(request: Request) -> Settings:
    return request.app.state.deps.settings


async def _readiness(request: Request) -> Readiness:
    return request.app.state.readiness


DepsDep = Annotated[Deps, Depends(_deps)]
EngineDep = Annotated[Engine, Depends(_engine)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ReadinessDep = Annotated[Readiness, Depends(_readiness)]

# Declared for the OpenAPI schema; the check itself reads the raw header, exactly as the gRPC front end does.
_bearer = HTTPBearer(auto_error=False, description="A token from SARM_AUTH_TOKENS (when auth is on).")


def authorized(operation: Operation) -> Any:
    """A dependency that lets only callers whose role may call `operation` through (401/403 otherwise)."""

    async def check(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
        auth: Authenticator = request.app.state.auth
        auth.authorize(request.headers.get("authorization"), operation)

    return Depends(check)
