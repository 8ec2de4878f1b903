"""`python -m bench.rabc_experiment`: the RA-BC end-to-end experiment as one command."""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports mujoco

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from bench.rabc_experiment.experiment import ExperimentConfig, run
from bench.rabc_experiment.policy import BCConfig
from sarm.sim.metaworld_demos import parse_mix

DEV_TASKS = "pick-place-v3,assembly-v3,peg-insert-side-v3"
console = Console()


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def main(
    out: Annotated[Path, typer.Option(help="Work directory (datasets, SARM, weights).")] = Path("runs/rabc/main"),
    results: Annotated[
        Path | None,
        typer.Option(help="Report path prefix: writes PREFIX.json, .md, .png (default OUT/rabc_experiment)."),
    ] = None,
    tasks: Annotated[str, typer.Option(help="Comma-separated Meta-World tasks.")] = DEV_TASKS,
    demos: Annotated[int, typer.Option(min=1, help="Demos per task.")] = 100,
    mix: Annotated[str, typer.Option(help="Quality mix of the demos.")] = "clean=0.3,degraded=0.4,failed=0.3",
    data_seed: Annotated[int, typer.Option(help="Seed of the demos (and of SARM training).")] = 0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Existing datasets at DIR/<task> (made there if missing); default OUT/data.")
    ] = None,
    image_size: Annotated[int, typer.Option(min=16, help="Rendered image size.")] = 96,
    encoder_input: Annotated[int, typer.Option(min=32, help="EfficientNet input size for SARM's frames.")] = 96,
    sarm: Annotated[
        Path | None, typer.Option(help="Use this SARM checkpoint instead of training one (trained at --encoder-input).")
    ] = None,
    sarm_steps: Annotated[int, typer.Option(min=1, help="SARM training steps.")] = 1500,
    seeds: Annotated[str, typer.Option(help="Comma-separated BC seeds (init and batch order).")] = "0,1,2",
    bc_steps: Annotated[int, typer.Option(min=1, help="BC optimiser steps per policy.")] = 4000,
    chunk: Annotated[int, typer.Option(min=1, help="Action-chunk length (RA-BC's Δ).")] = 8,
    execute: Annotated[int, typer.Option(min=1, help="Actions executed per chunk.")] = 4,
    kappa: Annotated[float, typer.Option(help="RA-BC κ.")] = 0.01,
    episodes: Annotated[
        int, typer.Option(min=1, help="Rollout layouts per task, arm and seed (paired across arms).")
    ] = 100,
    bootstrap: Annotated[int, typer.Option(min=100, help="Paired bootstrap resamples of layouts.")] = 10_000,
    repeat_check: Annotated[
        bool, typer.Option(help="Retrain and re-roll the first BC policy in the same process and compare the two.")
    ] = True,
    quick: Annotated[bool, typer.Option(help="Tiny smoke configuration (one task, a few demos and steps).")] = False,
) -> None:
    """Mixed-quality demos → SARM → RA-BC weights → BC, success-filtered BC and BC + RA-BC (same seeds, steps and
    batch size) → rollouts on the same layouts → paired statistics."""
    if quick:
        tasks, demos, sarm_steps, seeds, bc_steps, episodes = "pick-place-v3", 6, 10, "0", 50, 3
        image_size, encoder_input = 64, 64
    config = ExperimentConfig(
        tasks=[t.strip() for t in tasks.split(",") if t.strip()],
        out=out,
        results=results or out / "rabc_experiment",
        demos=demos,
        mix=parse_mix(mix),
        data_seed=data_seed,
        data_dir=data_dir,
        image_size=image_size,
        encoder_input=encoder_input,
        sarm=sarm,
        sarm_steps=sarm_steps,
        seeds=_ints(seeds),
        bc=BCConfig(chunk=chunk, execute=execute, steps=bc_steps),
        kappa=kappa,
        episodes=episodes,
        bootstrap=bootstrap,
        repeat_check=repeat_check,
    )
    outcome = run(config)
    for task, r in outcome["tasks"].items():
        rates = ", ".join(
            f"{arm} {a['rate']:.2f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]" for arm, a in r["arms"].items()
        )
        console.print(f"{task}: {rates}; mean weight {r['weights']['mean_weight']:.3f}")
        for name, c in r["paired"].items():
            low, high = c["ci95"]
            console.print(f"  {name}: {c['difference']:+.3f} [{low:+.3f}, {high:+.3f}], McNemar p {c['p_mcnemar']:.3g}")
    console.print(f"report: {config.results}.md")


if __name__ == "__main__":
    typer.run(main)
