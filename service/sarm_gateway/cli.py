"""The gateway's command: `sarm-gateway`, which `sarm serve` runs through the `sarm.gateway` entry point (so that the
core never imports the gateway). Settings not given as options come from SARM_* env."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from sarm.encoders.base import EncoderMismatchError
from sarm.scoring.backends import BackendNotAvailable
from sarm_gateway.server import Gateway, serve
from sarm_gateway.settings import DEFAULT_MODEL_REPO, Settings

console = Console(stderr=True)


def run(overrides: dict[str, Any]) -> int:
    """Serve until SIGTERM/SIGINT with `overrides` on top of the SARM_* settings; the exit code (2: refused, with one
    line saying why)."""
    try:
        settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        return 2
    if settings.model_repo == DEFAULT_MODEL_REPO and not DEFAULT_MODEL_REPO.is_dir():
        console.print(
            f"[red]error:[/red] the default model is not built at {DEFAULT_MODEL_REPO}: run `make setup`, "
            "or pass --model-repo DIR (a repository from `sarm export`)",
            soft_wrap=True,
        )
        return 2

    def started(gateway: Gateway) -> None:
        http = "HTTP API" if settings.http_port is not None else "metrics"
        console.print(
            f"serving {settings.model_repo} ({settings.backend}) on gRPC {settings.grpc_host}:"
            f"{gateway.port}, {http} {settings.http_host}:{gateway.http_port}",
            soft_wrap=True,
        )

    try:
        asyncio.run(serve(settings, started))
    except (FileNotFoundError, ValueError, EncoderMismatchError, BackendNotAvailable, OSError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        return 2
    return 0


def main(
    model_repo: Annotated[
        Path | None,
        typer.Option(
            help="Model repository from `sarm export` (default: SARM_MODEL_REPO, else the shipped default model)."
        ),
    ] = None,
    backend: Annotated[str | None, typer.Option(help="local (ONNX Runtime in-process) or triton.")] = None,
    triton_url: Annotated[str | None, typer.Option(help="Triton gRPC HOST:PORT (with --backend triton).")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port (default 50051).")] = None,
    http_port: Annotated[
        int | None,
        typer.Option(
            help="HTTP API port (video scoring, /metrics, /livez, /readyz). Without it, only /metrics, /livez and "
            "/readyz are served, on SARM_METRICS_PORT (default 9464)."
        ),
    ] = None,
) -> None:
    """Serve SARM rewards over gRPC and HTTP until SIGTERM/SIGINT (then not ready, drain both, stop)."""
    raise typer.Exit(
        run(
            {
                "model_repo": model_repo,
                "backend": backend,
                "triton_url": triton_url,
                "grpc_port": grpc_port,
                "http_port": http_port,
            }
        )
    )


app = typer.Typer(add_completion=False)
app.command()(main)
command = typer.main.get_command(app)  # what `sarm serve` runs, through the `sarm.gateway` entry point


def entry() -> None:
    command()
