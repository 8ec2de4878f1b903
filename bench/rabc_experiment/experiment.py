"""The whole experiment: data → SARM → progress → RA-BC weights → BC and BC + RA-BC per seed → rollouts → report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.rabc_experiment import data
from bench.rabc_experiment.policy import BCConfig, ChunkPolicy, train_bc
from bench.rabc_experiment.report import markdown, plot
from bench.rabc_experiment.rollout import Controller, eval_seeds, expert_controller, rollout, state_controller
from bench.rabc_experiment.stats import newcombe_difference, wilson_interval
from bench.rabc_experiment.weights import weight_report
from sarm.cli.progress import progress_bar
from sarm.rabc.weights import RabcParams, compute
from sarm.sim.metaworld_demos import QUALITIES, STATE_NAMES, QualityMix
from sarm.training.checkpoint import load_info


@dataclass
class ExperimentConfig:
    tasks: list[str]
    out: Path  # work directory: datasets, SARM, per-task weights
    results: Path  # report path prefix: <results>.json, .md, .png
    demos: int = 100
    mix: QualityMix = field(default_factory=lambda: QualityMix(0.3, 0.4, 0.3))
    data_seed: int = 0
    data_dir: Path | None = None  # existing datasets at <data_dir>/<task>; default <out>/data (made if missing)
    image_size: int = 96
    encoder_input: int = 96
    sarm: Path | None = None  # a trained SARM to use instead of training one on the demos
    sarm_steps: int = 1500
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    bc: BCConfig = field(default_factory=BCConfig)
    kappa: float = 0.01
    episodes: int = 50

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            out=str(self.out),
            results=str(self.results),
            data_dir=str(self.data_dir) if self.data_dir else None,
            sarm=str(self.sarm) if self.sarm else None,
            state_dim=len(STATE_NAMES),
            mix=", ".join(f"{q} {getattr(self.mix, q):.0%}" for q in QUALITIES),
        )
        return out


def _arm_stats(per_seed: list[dict[str, int]]) -> dict[str, Any]:
    successes = sum(s["successes"] for s in per_seed)
    episodes = sum(s["episodes"] for s in per_seed)
    return {
        "successes": successes,
        "episodes": episodes,
        "rate": successes / episodes,
        "ci95": list(wilson_interval(successes, episodes)),
        "per_seed": per_seed,
    }


def rabc_minus_bc(arms: dict[str, Any]) -> dict[str, Any]:
    """RA-BC's success rate minus BC's, with Newcombe's 95% interval (pooled over seeds, like the rates)."""
    bc, rabc = arms["bc"], arms["rabc"]
    low, high = newcombe_difference(bc["successes"], bc["episodes"], rabc["successes"], rabc["episodes"])
    return {"difference": rabc["rate"] - bc["rate"], "ci95": [low, high]}


def _evaluate(task: str, controller: Controller, seeds: list[int], label: str) -> int:
    with progress_bar() as bar:
        job = bar.add_task(f"rollout {task} {label}", total=len(seeds), status="")
        done = [0]

        def advance(success: bool) -> None:
            done[0] += success
            bar.update(job, advance=1, status=f"{done[0]} succeeded")

        return sum(rollout(task, controller, seeds, advance))


def _train(demos: data.Demos, weights: list[np.ndarray] | None, config: BCConfig, seed: int, label: str) -> ChunkPolicy:
    with progress_bar() as bar:
        job = bar.add_task(f"BC {demos.task} {label} seed {seed}", total=config.steps, status="")

        def show(step: int, loss: float) -> None:
            if step % 100 == 0 or step == config.steps:
                bar.update(job, completed=step, status=f"loss {loss:.4f}")

        return train_bc(demos, weights, config, seed, show)


def run(config: ExperimentConfig) -> dict[str, Any]:
    torch.set_num_threads(1)  # small models on shared cores: more threads only spin
    timing: dict[str, float] = {}
    started = lap = time.perf_counter()

    def clock(phase: str) -> None:
        nonlocal lap
        timing[phase], lap = time.perf_counter() - lap, time.perf_counter()

    data_dir = config.data_dir or config.out / "data"
    roots = {
        task: data.generate(
            task, config.demos, data_dir / task, seed=config.data_seed, mix=config.mix, image_size=config.image_size
        )
        for task in config.tasks
    }
    clock("generate")
    for root in roots.values():  # a given SARM must have been trained at this encoder input (checked when scoring)
        data.embed(root, config.encoder_input)
    clock("embed")
    checkpoint = config.sarm or data.train_sarm(
        list(roots.values()), config.out / "sarm", steps=config.sarm_steps, seed=config.data_seed
    )
    clock("train SARM")
    info = load_info(checkpoint)
    last_validation = info.training.get("history", [{}])[-1]
    sarm_report = {
        "source": f"trained on these demos ({info.training.get('steps_done')} steps)"
        if config.sarm is None
        else f"given checkpoint {checkpoint}",
        "checkpoint": str(checkpoint),
        "validation": {k: v for k, v in last_validation.items() if k.startswith("val_")},
    }

    tasks: dict[str, Any] = {}
    layouts = eval_seeds(config.episodes)
    params = RabcParams(config.bc.chunk, kappa=config.kappa)
    for task, root in roots.items():
        demos = data.load_demos(task, root)
        progress = data.episode_progress(checkpoint, root)
        rabc = compute(progress, params)
        np.savez_compressed(
            config.out / f"{task}_rabc.npz",
            progress=np.concatenate(progress),
            weights=np.concatenate(rabc.weights),
            lengths=[len(p) for p in progress],
        )
        arms: dict[str, list[dict[str, int]]] = {"bc": [], "rabc": []}
        for seed in config.seeds:
            for arm, weights in (("bc", None), ("rabc", rabc.weights)):
                policy = _train(demos, weights, config.bc, seed, arm)
                successes = _evaluate(task, state_controller(policy.act), layouts, f"{arm} seed {seed}")
                arms[arm].append({"seed": seed, "successes": successes, "episodes": len(layouts)})
        expert = _evaluate(task, expert_controller(task), layouts, "expert")
        stats = {
            "expert": _arm_stats([{"seed": -1, "successes": expert, "episodes": len(layouts)}]),
            **{arm: _arm_stats(per_seed) for arm, per_seed in arms.items()},
        }
        weights_summary = weight_report(demos, progress, rabc)
        tasks[task] = {"arms": stats, "rabc_minus_bc": rabc_minus_bc(stats), "weights": weights_summary}
        clock(f"weights, BC and rollouts {task}")
        _write(config, sarm_report, tasks, timing)  # partial report after each task: a long run shows as it goes
    timing["total"] = time.perf_counter() - started
    return _write(config, sarm_report, tasks, timing)


def _write(
    config: ExperimentConfig, sarm: dict[str, Any], tasks: dict[str, Any], timing: dict[str, float]
) -> dict[str, Any]:
    results = {"config": config.to_dict(), "sarm": sarm, "tasks": tasks, "wall_time_s": timing}
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.with_suffix(".json").write_text(json.dumps(results, indent=2))
    plot_path = config.results.with_suffix(".png")
    plot(results, plot_path)
    config.results.with_suffix(".md").write_text(markdown(results, plot_path.name))
    return results
