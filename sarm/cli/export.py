"""`sarm export`: write a Triton model repository (CPU python backend or GPU TensorRT) from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sarm.cli.train import USER_ERRORS
from sarm.encoders.weights import ENCODER_PATH_HELP, use_encoder_path

console = Console()


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise typer.BadParameter(f"expected HEIGHTxWIDTH such as 128x128, got {text!r}") from error
    if height < 8 or width < 8:
        raise typer.BadParameter(f"image size must be at least 8x8, got {text!r}")
    return height, width


def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory from `sarm train`.")],
    out: Annotated[Path, typer.Option(help="New model repository directory.")],
    target: Annotated[str, typer.Option(help="cpu (python backend + onnxruntime) or gpu (TensorRT plans).")] = "cpu",
    image_size: Annotated[
        str | None, typer.Option(help="Camera HEIGHTxWIDTH the encoder takes (default: the training data's).")
    ] = None,
    quantize: Annotated[
        str | None, typer.Option(help="int8: static INT8 (QDQ, per-channel) frame encoder; needs --calibration.")
    ] = None,
    calibration: Annotated[
        list[Path] | None,
        typer.Option(help="LeRobot dataset whose frames calibrate --quantize int8 (repeat for several)."),
    ] = None,
    encoder_path: Annotated[Path | None, typer.Option(help=ENCODER_PATH_HELP)] = None,
) -> None:
    """Export the frame encoder and SARM heads to ONNX and write a Triton model repository with a manifest."""
    from sarm.export.model_repo import export_model_repository

    use_encoder_path(encoder_path)
    if target not in ("cpu", "gpu"):
        console.print(f"[red]error:[/red] --target must be cpu or gpu, got {target!r}")
        raise typer.Exit(2)
    if quantize not in (None, "int8"):
        console.print(f"[red]error:[/red] --quantize must be int8, got {quantize!r}")
        raise typer.Exit(2)
    if (quantize is None) != (not calibration):
        console.print(
            "[red]error:[/red] --quantize int8 and --calibration DATASET go together: INT8 needs "
            "calibration frames, and a float export takes none"
        )
        raise typer.Exit(2)
    work = "exporting" + (" and calibrating the INT8 encoder (about a minute on 2 cores)" if calibration else "")
    try:
        with console.status(work):
            manifest = export_model_repository(
                checkpoint, out, "cpu" if target == "cpu" else "gpu", parse_image_size(image_size), calibration or ()
            )
    except (*USER_ERRORS, FileExistsError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    height, width = manifest.image_size
    console.print(
        f"model repository {out} ({target}): {', '.join(manifest.models.values())}; "
        f"stages {list(manifest.stage_names)}; images {height}x{width}"
    )
    if "quantization" in manifest.frame_encoder.extra:
        calibrated = manifest.frame_encoder.extra["quantization"]["calibration"]
        console.print(
            f"frame encoder INT8, calibrated on {calibrated['frames']} frames of {calibrated['episodes']} episodes"
        )
    if target == "gpu":
        console.print(f"build the TensorRT engines on the target GPU: {out / 'build_engines.sh'}")
