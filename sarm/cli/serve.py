"""`sarm serve`: the reward gateway (gRPC, and HTTP with --http-port) on a model repository. The gateway is its own
package with its own command (`sarm-gateway`, whose options these are); it is found through the `sarm.gateway` entry
point, so the core never imports it."""

from __future__ import annotations

from importlib.metadata import entry_points

import typer
from rich.console import Console

console = Console(stderr=True)
# Every argument, --help included, goes to the gateway's own command.
CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def serve_command(ctx: typer.Context) -> None:
    """Serve SARM rewards over gRPC and HTTP until SIGTERM/SIGINT (`sarm serve --help` for the options)."""
    found = entry_points(group="sarm.gateway", name="command")
    if not found:
        console.print("[red]error:[/red] the gateway is not installed: `pip install -e .` (it provides sarm-gateway)")
        raise typer.Exit(2)
    command = next(iter(found)).load()
    command.main(args=ctx.args, prog_name="sarm serve")
