"""`sarm train`: train SARM (or the frame-index baseline) on embedded datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sarm.cli.progress import progress_bar
from sarm.data.annotations import AnnotationError
from sarm.data.lerobot import DatasetError
from sarm.device import DEVICE_HELP, DeviceName
from sarm.encoders.base import EncoderMismatchError
from sarm.training.checkpoint import CheckpointError
from sarm.training.samples import LabelMode
from sarm.training.trainer import TrainConfig, train

console = Console()
# Problems with the user's data or arguments: a message and exit code 2, never a traceback.
USER_ERRORS = (DatasetError, AnnotationError, EncoderMismatchError, CheckpointError, FileNotFoundError, ValueError)


def train_command(
    datasets: Annotated[
        list[Path],
        typer.Argument(
            help="Embedded dataset roots (run `sarm embed` first); datasets of several tasks train one model."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Checkpoint directory to write.")],
    preset: Annotated[
        str,
        typer.Option(help="Model size: small (for a CPU, the default) or paper (119 M parameters: meant for a GPU)."),
    ] = "small",
    steps: Annotated[int, typer.Option(min=1, help="Optimiser steps.")] = 3000,
    labels: Annotated[str, typer.Option(help="stage (SARM) or frame-index (the t/T baseline).")] = "stage",
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default by preset).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    eval_every: Annotated[int, typer.Option(min=1, help="Validate and checkpoint every N steps.")] = 250,
    resume: Annotated[bool, typer.Option(help="Continue the run saved in --out.")] = False,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads (1 is fastest for the small preset).")] = 1,
    stride_seconds: Annotated[
        float,
        typer.Option(
            help="Window stride g in seconds (LeRobot's frame_gap / fps): the 9-frame window spans 8 g; "
            "episodes younger than that space their frames evenly. Saved in the checkpoint."
        ),
    ] = 1.0,
    device: Annotated[
        DeviceName, typer.Option(help=f"Where the model trains (recorded in the checkpoint). {DEVICE_HELP}")
    ] = "auto",
    state: Annotated[
        bool,
        typer.Option(
            "--state/--no-state",
            help="Also read each frame's observation.state (every dataset needs it, all of one width); the "
            "checkpoint stores its training mean/std and scoring then needs the state too.",
        ),
    ] = False,
) -> None:
    """Train SARM with the paper's recipe; progress bar with losses, checkpoint at every validation."""
    if labels not in ("stage", "frame-index"):
        console.print(f"[red]error:[/red] --labels must be stage or frame-index, got {labels!r}")
        raise typer.Exit(2)
    label_mode: LabelMode = "stage" if labels == "stage" else "frame-index"
    try:
        config = TrainConfig(
            datasets=datasets,
            out=out,
            preset=preset,
            steps=steps,
            labels=label_mode,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            eval_every=eval_every,
            resume=resume,
            threads=threads,
            stride_seconds=stride_seconds,
            device=device,
            use_state=state,
        )
        with progress_bar() as bar:
            job = bar.add_task("training", total=steps, status="")
            last_val = [""]  # the latest validation figures stay on the bar between validations

            def show(step: int, report: dict[str, float]) -> None:
                status = f"loss {report['loss']:.3f} (stage {report['stage_loss']:.3f}, τ {report['tau_loss']:.4f})"
                if "val_loss" in report:
                    last_val[0] = f" · val {report['val_loss']:.3f}, acc {report['val_stage_accuracy']:.2f}"
                bar.update(job, completed=step, status=status + last_val[0])

            result = train(config, on_step=show)
    except USER_ERRORS as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    val = ", ".join(f"{k} {v:.4f}" for k, v in result.val.items())
    console.print(
        f"checkpoint {result.checkpoint}: {result.steps} steps on {result.device}, {result.steps_per_s:.1f} steps/s "
        f"({result.samples_per_s:.0f} samples/s), train loss {result.train_loss:.4f}; {val}"
    )
