"""`sarm rabc`: per-frame progress and RA-BC weights of a dataset, with a summary to judge them by."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from sarm.cli.progress import progress_bar
from sarm.cli.train import USER_ERRORS
from sarm.data.video import VideoError
from sarm.device import DEVICE_HELP, DeviceName
from sarm.encoders.weights import ENCODER_PATH_HELP, use_encoder_path
from sarm.rabc.files import PROGRESS_FILE, SUMMARY_FILE, WEIGHTS_FILE
from sarm.rabc.progress import OnEpisode
from sarm.rabc.weights import RabcParams, RabcSummary, Stats
from sarm.scoring.errors import BackendUnavailable
from sarm.scoring.options import BackendKind, EngineOptions

console = Console()
HEALTHY_MEAN_WEIGHT = (0.3, 0.8)  # SARM.md, "RA-BC"
Head = Literal["sparse", "dense"]


def rabc_command(
    dataset: Annotated[Path, typer.Argument(help="Dataset root (LeRobot v3.0); annotations are not needed.")],
    checkpoint: Annotated[Path, typer.Option(help="SARM checkpoint directory that scores the frames.")],
    chunk_size: Annotated[int, typer.Option(help="Action chunk length Δ in frames (the policy's chunk).")],
    out: Annotated[Path, typer.Option(help="Directory for sarm_progress.parquet, rabc_weights.parquet, summary.")],
    kappa: Annotated[float, typer.Option(help="Gain above which a sample gets weight 1.")] = 0.01,
    eps: Annotated[float, typer.Option(help="ε of the soft weight's denominator.")] = 1e-6,
    stats: Annotated[Stats, typer.Option(help="μ, σ of the gains: over the whole dataset, or running (Welford).")] = (
        "global"
    ),
    stride: Annotated[int, typer.Option(help="Score every N-th frame (and the last); interpolate between.")] = 1,
    plot: Annotated[bool, typer.Option(help="Also write rabc_weights.png.")] = False,
    threads: Annotated[int, typer.Option(min=1, help="Intra-op threads for the encoder and model.")] = 1,
    head: Annotated[
        Head,
        typer.Option(
            help="The progress head the weights come from: sparse, or dense for models that have one (both are written "
            "to sarm_progress.parquet).",
        ),
    ] = "sparse",
    backend: Annotated[
        BackendKind,
        typer.Option(
            help="Where the exported graphs run: local (ONNX Runtime in this process) or triton (a Triton server that "
            "serves this checkpoint's repository, at --triton-url).",
        ),
    ] = "local",
    triton_url: Annotated[str, typer.Option(help="Triton gRPC HOST:PORT (with --backend triton).")] = (
        "127.0.0.1:8001"
    ),
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="auto|ADDRESS",
            help="Spread the episodes over the Ray cluster whose head is at HOST:PORT (`auto`: RAY_ADDRESS, else the "
            "head started on this machine). Each worker needs the dataset and checkpoint at the same paths.",
        ),
    ] = None,
    ray_workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Ray workers (each with --threads CPUs); default: as many as the cluster's CPUs hold.",
        ),
    ] = None,
    device: Annotated[
        DeviceName,
        typer.Option(
            help="Where scoring runs: ONNX Runtime's CUDA provider (onnxruntime-gpu) for our checkpoints with "
            "--backend local; Triton places its models itself. " + DEVICE_HELP
        ),
    ] = "auto",
    encoder_path: Annotated[Path | None, typer.Option(help=ENCODER_PATH_HELP)] = None,
) -> None:
    """Score every frame with CKPT, then write RA-BC weights (paper eq. 8–9) and print their summary."""
    from sarm.rabc.pipeline import run_rabc
    from sarm.rabc.plot import plot_rabc
    from sarm.scoring.options import EngineOptions

    use_encoder_path(encoder_path)
    engine = EngineOptions(backend=backend, triton_url=triton_url, intra_op_threads=threads)
    try:
        params = RabcParams(chunk_size, kappa, eps, stats)
        # The bar appears once the inputs are checked (the first call, done = 0), so errors print alone.
        bar = progress_bar()
        job = bar.add_task("scoring episodes", total=None, status="")

        def advance(done: int, total: int) -> None:
            bar.start()
            bar.update(job, completed=done, total=total)

        try:
            if ray is None:
                summary = run_rabc(
                    dataset,
                    checkpoint,
                    params,
                    out,
                    stride,
                    on_episode=advance,
                    options=engine,
                    head=head,
                    device=device,
                )
            else:
                summary = _run_on_ray(
                    dataset, checkpoint, params, out, stride, ray, ray_workers, engine, head, advance, device
                )
        finally:
            if bar.live.is_started:
                bar.stop()
        written = [out / name for name in (PROGRESS_FILE, WEIGHTS_FILE, SUMMARY_FILE)]
        if plot:
            written.append(plot_rabc(out, summary))
    except (*USER_ERRORS, VideoError, BackendUnavailable) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(2) from error
    print_summary(summary)
    console.print("wrote " + ", ".join(str(p) for p in written), soft_wrap=True)


def _run_on_ray(
    dataset: Path,
    checkpoint: Path,
    params: RabcParams,
    out: Path,
    stride: int,
    address: str,
    workers: int | None,
    engine: EngineOptions,
    head: Head,
    advance: OnEpisode,
    device: str,
) -> RabcSummary:
    try:
        from sarm.rabc.distributed import RayLabellingError, RayOptions, run_rabc_on_ray
    except ImportError as error:  # ray is an extra, imported only when asked for
        console.print(f"[red]error:[/red] --ray needs Ray: pip install 'sarm[ray]' ({error})", soft_wrap=True)
        raise typer.Exit(2) from error
    try:
        summary, run = run_rabc_on_ray(
            dataset,
            checkpoint,
            params,
            out,
            RayOptions(address, workers, engine.intra_op_threads),
            stride,
            on_episode=advance,
            engine=engine,
            head=head,
            device=device,
        )
    except RayLabellingError as error:  # the cluster failed, not the input: exit 1, not 2
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        raise typer.Exit(1) from error
    console.print(f"labelled on {run.workers} Ray worker(s) at {address}", soft_wrap=True)
    return summary


def print_summary(summary: RabcSummary) -> None:
    table = Table(title=f"RA-BC weights ({summary.frames} frames, {len(summary.episode_mean_weights)} episodes)")
    table.add_column("")
    table.add_column("value")
    lowest, highest = summary.extremes()
    rows = [
        ("mean weight", f"{summary.mean_weight:.3f}"),
        ("zero weights", f"{summary.zero_weight_share:.1%}"),
        ("δ mean ± std", f"{summary.delta_mean:.4f} ± {summary.delta_std:.4f}"),
        ("μ, σ used", f"{summary.mu:.4f}, {summary.sigma:.4f}"),
        ("lowest episodes", ", ".join(f"{e}: {w:.3f}" for e, w in lowest)),
        ("highest episodes", ", ".join(f"{e}: {w:.3f}" for e, w in highest)),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    low, high = HEALTHY_MEAN_WEIGHT
    if not low <= summary.mean_weight <= high:
        console.print(
            f"[yellow]note:[/yellow] a healthy mean weight is roughly {low}–{high}; check the checkpoint fits "
            "this data and the chunk size is the policy's",
            soft_wrap=True,
        )
