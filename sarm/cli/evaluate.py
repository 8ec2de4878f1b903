"""`sarm eval`: VOC, demo MSE, stage accuracy and success AUROC for checkpoints side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sarm.cli.train import USER_ERRORS
from sarm.device import DEVICE_HELP, DeviceName
from sarm.encoders.weights import ENCODER_PATH_HELP, use_encoder_path

console = Console()


def eval_command(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint directories to compare.")],
    data: Annotated[Path, typer.Option(help="Embedded, annotated dataset of held-out demos.")],
    out: Annotated[Path, typer.Option(help="Report directory (metrics.json, report.md, plots).")],
    allow_in_sample: Annotated[
        bool,
        typer.Option(
            help="Evaluate even when --data overlaps a checkpoint's training data; the results are marked in-sample."
        ),
    ] = False,
    device: Annotated[DeviceName, typer.Option(help=f"Where the checkpoints' heads run. {DEVICE_HELP}")] = "auto",
    encoder_path: Annotated[Path | None, typer.Option(help=ENCODER_PATH_HELP)] = None,
) -> None:
    """Evaluate checkpoints on held-out demos; writes REPORT_DIR/metrics.json, report.md and PNG plots."""
    from sarm.evaluation import evaluate

    use_encoder_path(encoder_path)
    try:
        report = evaluate(checkpoints, data, out, allow_in_sample, device)
    except USER_ERRORS as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    table = Table(title=f"{data} ({report['episodes']} episodes, on {report['device']})")
    for column in ("checkpoint", "labels", "data", "VOC", "demo MSE", "stage acc", "AUROC"):
        table.add_column(column)
    for name, m in report["checkpoints"].items():
        cells = [m["voc_mean"], m["demo_mse"], m["stage_accuracy"], m["success_auroc"]]
        data_kind = {True: "[yellow]in-sample[/yellow]", False: "held out", None: "unknown"}[m["in_sample"]]
        table.add_row(name, m["labels"], data_kind, *("n/a" if v is None else f"{v:.3f}" for v in cells))
    console.print(table)
    console.print(f"report: {out / 'report.md'}")
