"""`sarm eval`: VOC, demo MSE, stage accuracy and success AUROC for checkpoints side by side, scored in ONNX Runtime on
each checkpoint's exported heads graph (cached, as `sarm rabc`'s) or, with `--engine torch`, in PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from sarm.cli.train import USER_ERRORS
from sarm.device import DEVICE_HELP, DeviceName
from sarm.encoders.weights import ENCODER_PATH_HELP, use_encoder_path

console = Console()
# sarm.evaluation.EvalEngine, spelt out so that `sarm --help` does not import the evaluation (matplotlib, scipy).
EvalEngine = Literal["onnxruntime", "torch"]


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
    engine: Annotated[
        EvalEngine,
        typer.Option(
            help="What runs the heads: onnxruntime (the checkpoint's exported graph, as `sarm rabc` and the gateway "
            "run it; exported once and cached) or torch (PyTorch, no export). Within the export parity tolerance of "
            "each other. A checkpoint that cannot be exported is scored in PyTorch; the report says which ran."
        ),
    ] = "onnxruntime",
    device: Annotated[
        DeviceName,
        typer.Option(
            help="Where the heads run: with --engine onnxruntime, cuda is ONNX Runtime's CUDA provider "
            "(onnxruntime-gpu); with --engine torch, the torch device. " + DEVICE_HELP
        ),
    ] = "auto",
    encoder_path: Annotated[Path | None, typer.Option(help=ENCODER_PATH_HELP)] = None,
) -> None:
    """Evaluate checkpoints on held-out demos; writes REPORT_DIR/metrics.json, report.md and PNG plots.

    The heads run in ONNX Runtime on each checkpoint's exported graph by default (--engine torch: PyTorch)."""
    from sarm.evaluation import evaluate

    use_encoder_path(encoder_path)
    try:
        report = evaluate(checkpoints, data, out, allow_in_sample, device, engine)
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
    # Which engine scored is a line of its own (and per checkpoint in the report): the table stays narrow.
    console.print(f"heads run by {report['engine']} on {report['device']}", soft_wrap=True)
    for name, m in report["checkpoints"].items():
        if "engine_note" in m:
            console.print(f"[yellow]note:[/yellow] {name}: {m['engine_note']}", soft_wrap=True)
    console.print(f"report: {out / 'report.md'}")
