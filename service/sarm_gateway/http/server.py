"""uvicorn on the running event loop — the gRPC server's — so both front ends share one Engine and drain together.

The socket is bound here, not by uvicorn: port 0 works and the bound port is known. SIGINT/SIGTERM belong to the
Gateway, which stops both front ends: uvicorn is kept from taking them over.

A drain comes in two steps: `drain()` (still listening, API requests answered 503 with Retry-After, so clients go to
another replica rather than meet a closed port) and, once the Gateway's work in flight is done, `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

API_PREFIX = "/v1/"  # what a drain refuses; /livez, /readyz (503 itself while draining) and /metrics still answer


class _Draining:
    """ASGI wrapper: while `draining`, API requests get 503 with Retry-After before reaching the app."""

    def __init__(self, app: ASGIApp, retry_after_s: int) -> None:
        self.app = app
        self.retry_after_s = retry_after_s
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.draining and scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            reply = JSONResponse(
                {
                    "detail": "draining: this server is shutting down and takes no new requests; "
                    "retry on another replica"
                },
                503,
                {"Retry-After": str(self.retry_after_s), "Connection": "close"},
            )
            await reply(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int, drain_seconds: float, retry_after_ms: int = 1000) -> None:
        self.host, self.port = host, port
        self._app = _Draining(app, math.ceil(retry_after_ms / 1000))
        # uvicorn takes whole seconds for the drain.
        self._server = _Server(
            uvicorn.Config(
                self._app, lifespan="off", log_config=None, timeout_graceful_shutdown=math.ceil(drain_seconds)
            )
        )
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Listen; the bound port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as error:
            sock.close()
            raise OSError(f"cannot listen for HTTP on {self.host}:{self.port} ({error})") from error
        self._serving = serving = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # startup takes a few loop turns
            if serving.done():
                serving.result()
                raise OSError(f"the HTTP server on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.005)
        return int(sock.getsockname()[1])

    def drain(self) -> None:
        """Keep listening, but answer API requests 503 with Retry-After."""
        self._app.draining = True

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting, give requests in flight up to `grace_s` (default drain_seconds), then close."""
        if grace_s is not None:
            self._server.config.timeout_graceful_shutdown = math.ceil(grace_s)
        if self._serving is not None:
            self._app.draining = True
            self._server.should_exit = True
            await self._serving
            self._serving = None
