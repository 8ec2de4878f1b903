"""`sarm serve`: the reward gateway (gRPC, and HTTP with --http-port) on a model repository. The gateway is its own
package (`sarm-gateway`); it is found through the `sarm.gateway` entry point, so the core never imports it."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

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
    http_port: Annotated[int | None, typer.Option(
        help="HTTP API port (video scoring, /metrics, /livez, /readyz). Without it, only /metrics, /livez and /readyz "
             "are served, on SARM_METRICS_PORT (default 9464)."
    )] = None,
) -> None:
    """Serve SARM rewards over gRPC and HTTP until SIGTERM/SIGINT (then not ready, drain both, stop)."""
    found = entry_points(group="sarm.gateway", name="run")
    if not found:
        console.print("[red]error:[/red] the gateway is not installed: `pip install -e .` (it provides sarm-gateway)")
        raise typer.Exit(2)
    run = next(iter(found)).load()
    raise typer.Exit(run({"model_repo": model_repo, "backend": backend, "triton_url": triton_url,
                          "grpc_port": grpc_port, "http_port": http_port}))
