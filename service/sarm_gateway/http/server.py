"""uvicorn on the running event loop — the gRPC server's — so both front ends share one Engine and drain together.

The socket is bound here, not by uvicorn: port 0 works and the bound port is known. SIGINT/SIGTERM belong to the
Gateway, which stops both front ends: uvicorn is kept from taking them over.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int, drain_seconds: float) -> None:
        self.host, self.port = host, port
        # uvicorn takes whole seconds for the drain.
        self._server = _Server(uvicorn.Config(app, lifespan="off", log_config=None,
                                              timeout_graceful_shutdown=math.ceil(drain_seconds)))
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

    async def stop(self) -> None:
        """Stop accepting, give requests in flight up to drain_seconds, then close."""
        if self._serving is not None:
            self._server.should_exit = True
            await self._serving
            self._serving = None
