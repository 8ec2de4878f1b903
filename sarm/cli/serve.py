"""`sarm serve`: the reward gateway (gRPC) on a model repository. Settings not given here come from SARM_* env."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)


def serve_command(
    model_repo: Annotated[Path | None, typer.Option(
        help="Model repository from `sarm export` (default: SARM_MODEL_REPO, else the shipped default model)."
    )] = None,
    backend: Annotated[str | None, typer.Option(help="local (ONNX Runtime in-process) or triton.")] = None,
    triton_url: Annotated[str | None, typer.Option(help="Triton gRPC HOST:PORT (with --backend triton).")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port (default 50051).")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port (the HTTP API is not served yet).")] = None,
) -> None:
    """Serve SARM rewards over gRPC until SIGTERM/SIGINT (then NOT_SERVING, drain, stop)."""
    import asyncio

    from pydantic import ValidationError

    from sarm.encoders.base import EncoderMismatchError
    from sarm_gateway.backends import BackendNotAvailable
    from sarm_gateway.server import serve
    from sarm_gateway.settings import DEFAULT_MODEL_REPO, Settings

    given: dict[str, Any] = {"model_repo": model_repo, "backend": backend, "triton_url": triton_url,
                             "grpc_port": grpc_port, "http_port": http_port}
    try:
        settings = Settings(**{key: value for key, value in given.items() if value is not None})
    except ValidationError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    if settings.model_repo == DEFAULT_MODEL_REPO and not DEFAULT_MODEL_REPO.is_dir():
        console.print(f"[red]error:[/red] the default model is not built at {DEFAULT_MODEL_REPO}: run `make setup`, "
                      "or pass --model-repo DIR (a repository from `sarm export`)", soft_wrap=True)
        raise typer.Exit(2)
    if settings.http_port is not None:
        console.print(f"note: the HTTP API is not built yet; port {settings.http_port} is not served")

    def started(port: int) -> None:
        console.print(f"serving {settings.model_repo} ({settings.backend}) on gRPC {settings.grpc_host}:{port}")

    try:
        asyncio.run(serve(settings, started))
    except (FileNotFoundError, ValueError, EncoderMismatchError, BackendNotAvailable, OSError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error


