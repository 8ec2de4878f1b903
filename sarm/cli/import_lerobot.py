"""`sarm import lerobot`: turn a LeRobot SARM `save_pretrained` folder into a checkpoint of ours."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
import_app = typer.Typer(no_args_is_help=True, help="Import models trained elsewhere.")


@import_app.command("lerobot")
def import_lerobot_command(
    ckpt_dir: Annotated[Path, typer.Argument(help="LeRobot SARM folder (lerobot-train's pretrained_model/).")],
    clip: Annotated[
        str,
        typer.Option(
            help="The CLIP it was trained with: a local save_pretrained folder, or a Hub id already in the local "
            "Hugging Face cache (nothing is downloaded)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="New checkpoint folder.")],
) -> None:
    """Check that the LeRobot SARM can be reproduced exactly, then write it as a checkpoint of ours."""
    from sarm.lerobot.checkpoint import import_lerobot

    if not ckpt_dir.is_dir():
        console.print(f"[red]error:[/red] {ckpt_dir} is not a folder", soft_wrap=True)
        raise typer.Exit(2)
    try:
        with console.status(f"importing {ckpt_dir}"):
            info = import_lerobot(ckpt_dir, clip, out)
    except (ValueError, FileExistsError, OSError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    model = info["model"]
    heads = ", ".join(f"{name} ({len(h['stage_names'])} stages)" for name, h in model["heads"].items())
    window = model["window"]
    console.print(
        f"imported {ckpt_dir} -> {out}: {model['annotation_mode']}, heads {heads}; centred window of "
        f"{window['frames']} frames, gap {window['gap_frames']}; state {model['state']['key']} "
        f"({model['state']['normalization']}); CLIP {info['frame_encoder']['model_path']}",
        soft_wrap=True,
    )
