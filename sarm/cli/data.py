"""`sarm data`: generate simulated demonstrations, validate and describe datasets."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sarm.cli.progress import progress_bar
from sarm.data.lerobot import DatasetError, LeRobotDataset
from sarm.data.validate import find_problems

data_app = typer.Typer(no_args_is_help=True, help="Generate, validate and inspect LeRobot v3.0 datasets.")
console = Console()

DatasetDir = Annotated[Path, typer.Argument(help="Dataset root (holds meta/info.json).")]


@data_app.command()
def generate(
    task: Annotated[str, typer.Option(help="Meta-World task with a scripted expert, e.g. pick-place-v3.")],
    episodes: Annotated[int, typer.Option(min=1, help="Number of episodes.")],
    out: Annotated[Path, typer.Option(help="New dataset directory.")],
    image_size: Annotated[int, typer.Option(min=16, max=1024, help="Square camera image size in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed; the same seed gives the same dataset.")] = 0,
    mix: Annotated[str, typer.Option(help="Quality mix of the episodes.")] = "clean=0.5,degraded=0.3,failed=0.2",
) -> None:
    """Roll out Meta-World's scripted experts into an annotated LeRobot v3.0 dataset."""
    from sarm.data.lerobot import LeRobotWriter
    from sarm.sim.metaworld_demos import METAWORLD_FPS, generate_episodes, parse_mix

    try:
        quality_mix = parse_mix(mix)
        generator = generate_episodes(task, episodes, image_size=image_size, seed=seed, mix=quality_mix)
        counts: Counter[str] = Counter()
        with progress_bar() as bar, LeRobotWriter(out, fps=METAWORLD_FPS, robot_type="sawyer") as writer:
            job = bar.add_task(f"{task}", total=episodes, status="")
            for ep in generator:
                writer.add_episode(ep)
                counts[f"{ep.episode_columns['quality']}"] += 1
                counts["success"] += bool(ep.episode_columns["success"])
                bar.update(job, advance=1, status=f"{counts['success']} succeeded")
    except (ValueError, DatasetError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    console.print(f"wrote {episodes} episodes to {out} ({dict(counts)})")


@data_app.command()
def validate(
    dataset: DatasetDir,
    require_annotations: Annotated[
        bool, typer.Option(help="Treat a dataset without SARM annotations as invalid.")
    ] = True,
) -> None:
    """Check layout, schema, frame counts and SARM annotations; exit 1 listing every problem."""
    problems = find_problems(dataset, require_annotations=require_annotations)
    if not problems:
        console.print(f"[green]valid[/green]: {dataset}")
        return
    console.print(f"[red]invalid[/red]: {dataset} ({len(problems)} problem(s))", soft_wrap=True)
    for problem in problems:
        console.print(f"  - {problem}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@data_app.command()
def info(dataset: DatasetDir) -> None:
    """Summarise a dataset: episodes, frames, cameras, tasks, stages and ᾱ, quality and success."""
    try:
        ds = LeRobotDataset(dataset)
        episodes = ds.episodes
    except DatasetError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from error
    summary = Table(title=str(dataset), show_header=False)
    lengths = [e.length for e in episodes]
    summary.add_row("episodes", str(len(episodes)))
    summary.add_row("frames", f"{sum(lengths)} (length {min(lengths)}–{max(lengths)}, fps {ds.fps})")
    summary.add_row("cameras", ", ".join(ds.camera_keys))
    summary.add_row("tasks", "\n".join(ds.tasks.values()))
    for column in ("quality", "success"):
        if column in ds.episodes_table.column_names:
            summary.add_row(column, str(dict(Counter(map(str, ds.episodes_table.column(column).to_pylist())))))
    for scheme in ds.schemes():
        proportions = ds.proportions(scheme) or {}
        summary.add_row(f"{scheme} stages (ᾱ)", "\n".join(f"{k}: {v:.3f}" for k, v in proportions.items()))
    console.print(summary)
