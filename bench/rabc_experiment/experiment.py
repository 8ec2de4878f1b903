"""The whole experiment: data → SARM → progress → RA-BC weights → three BC arms per seed (vanilla, success-filtered,
RA-BC) → rollouts on the same layouts → paired statistics → report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.rabc_experiment import data
from bench.rabc_experiment.machine import environment, load_average
from bench.rabc_experiment.policy import BCConfig, ChunkPolicy, train_bc
from bench.rabc_experiment.report import COMPARISONS, comparison_key, markdown, plot
from bench.rabc_experiment.rollout import Controller, eval_seeds, expert_controller, rollout, state_controller
from bench.rabc_experiment.stats import paired_comparison, wilson_interval
from bench.rabc_experiment.weights import weight_report
from sarm.cli.progress import progress_bar
from sarm.rabc.weights import RabcParams, compute
from sarm.sim.metaworld_demos import QUALITIES, STATE_NAMES, QualityMix
from sarm.training.checkpoint import load_info

POLICY_ARMS = ("bc", "bc_success", "rabc")  # trained per seed, in this order
STAGE_TIMES = "stage_times.json"  # in the work directory: how long each cached data stage took when it ran


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
    episodes: int = 100
    bootstrap: int = 10_000  # paired bootstrap resamples of layouts
    repeat_check: bool = True  # retrain and re-roll one BC policy in the same process and compare

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


def arm_stats(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled success rate over seeds with its Wilson interval (which treats every rollout as independent)."""
    successes = sum(s["successes"] for s in per_seed)
    episodes = sum(s["episodes"] for s in per_seed)
    return {
        "successes": successes,
        "episodes": episodes,
        "rate": successes / episodes,
        "ci95": list(wilson_interval(successes, episodes)),
        "per_seed": per_seed,
    }


def outcome_matrix(per_seed: list[dict[str, Any]]) -> np.ndarray:
    """(seeds, layouts) booleans from an arm's per-seed records."""
    return np.array([s["outcomes"] for s in per_seed], dtype=bool)


def comparisons(arms: dict[str, Any], resamples: int) -> dict[str, Any]:
    out = {}
    for b, a in COMPARISONS:
        if a in arms and b in arms:
            paired = paired_comparison(
                outcome_matrix(arms[a]["per_seed"]), outcome_matrix(arms[b]["per_seed"]), resamples=resamples
            )
            out[comparison_key(b, a)] = {"b": b, "a": a, **paired.to_dict()}
    return out


class LayoutCheck:
    """Every rollout of a task must start from the same layouts as the first one (the expert's): the paired
    statistics are only valid if they do, so a mismatch stops the run instead of producing a wrong comparison."""

    def __init__(self) -> None:
        self.reference: list[str] | None = None
        self.runs = 0

    def check(self, digests: list[str], label: str) -> None:
        if self.reference is None:
            self.reference = list(digests)
        elif digests != self.reference:
            bad = next(i for i, (x, y) in enumerate(zip(digests, self.reference, strict=True)) if x != y)
            raise RuntimeError(f"{label}: layout {bad} differs from the first arm's; the arms would not be paired")
        self.runs += 1

    def summary(self) -> dict[str, Any]:
        return {"layouts": len(self.reference or []), "runs_compared": self.runs, "identical": True}


def _evaluate(task: str, controller: Controller, seeds: list[int], label: str, check: LayoutCheck) -> list[bool]:
    digests: list[str] = []
    with progress_bar() as bar:
        job = bar.add_task(f"rollout {task} {label}", total=len(seeds), status="")
        done = [0]

        def advance(success: bool) -> None:
            done[0] += success
            bar.update(job, advance=1, status=f"{done[0]} succeeded")

        outcomes = rollout(task, controller, seeds, advance, digests)
    check.check(digests, f"{task} {label}")
    return outcomes


def _train(demos: data.Demos, weights: list[np.ndarray] | None, config: BCConfig, seed: int, label: str) -> ChunkPolicy:
    with progress_bar() as bar:
        job = bar.add_task(f"BC {demos.task} {label} seed {seed}", total=config.steps, status="")

        def show(step: int, loss: float) -> None:
            if step % 100 == 0 or step == config.steps:
                bar.update(job, completed=step, status=f"loss {loss:.4f}")

        return train_bc(demos, weights, config, seed, show)


def _same_parameters(p: ChunkPolicy, q: ChunkPolicy) -> bool:
    return all(torch.equal(x, y) for x, y in zip(p.state_dict().values(), q.state_dict().values(), strict=True))


def _record_stage(out: Path, phase: str, seconds: float) -> None:
    """Keep a data stage's wall time in the work directory, so a later run that reuses the cache can report it."""
    path = out / STAGE_TIMES
    times = json.loads(path.read_text()) if path.exists() else {}
    times[phase] = {"seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times, indent=2))


def _data_stages(config: ExperimentConfig, timing: dict[str, float]) -> tuple[dict[str, Path], Path]:
    """Generate, embed, train SARM (each skipped when cached); times the stages that did work."""
    data_dir = config.data_dir or config.out / "data"
    roots: dict[str, Path] = {}
    for task in config.tasks:
        root, fresh, start = data_dir / task, not data.generated(data_dir / task), time.perf_counter()
        roots[task] = data.generate(
            task, config.demos, root, seed=config.data_seed, mix=config.mix, image_size=config.image_size
        )
        timing[f"generate {task}"] = time.perf_counter() - start
        if fresh:
            _record_stage(config.out, f"generate {task}", timing[f"generate {task}"])
    for task, root in roots.items():  # a given SARM must have been trained at this encoder input (checked later)
        start = time.perf_counter()
        if data.embed(root, config.encoder_input):
            _record_stage(config.out, f"embed {task}", time.perf_counter() - start)
        timing[f"embed {task}"] = time.perf_counter() - start
    start = time.perf_counter()
    if config.sarm is not None:
        return roots, config.sarm
    fresh = data.sarm_steps_done(config.out / "sarm") < config.sarm_steps
    checkpoint = data.train_sarm(
        list(roots.values()), config.out / "sarm", steps=config.sarm_steps, seed=config.data_seed
    )
    timing["train SARM"] = time.perf_counter() - start
    if fresh:
        _record_stage(config.out, "train SARM", timing["train SARM"])
    return roots, checkpoint


def run(config: ExperimentConfig) -> dict[str, Any]:
    torch.set_num_threads(1)  # small models on shared cores: more threads only spin
    started = time.perf_counter()
    env = environment()
    timing: dict[str, float] = {}
    roots, checkpoint = _data_stages(config, timing)
    info = load_info(checkpoint)
    last_validation = info.training.get("history", [{}])[-1]
    sarm_report = {
        "source": f"trained on these demos ({info.training.get('steps_done')} steps)"
        if config.sarm is None
        else f"given checkpoint {checkpoint}",
        "checkpoint": str(checkpoint),
        "validation": {k: v for k, v in last_validation.items() if k.startswith("val_")},
    }
    stage_file = config.out / STAGE_TIMES
    cached = json.loads(stage_file.read_text()) if stage_file.exists() else {}

    tasks: dict[str, Any] = {}
    layouts = eval_seeds(config.episodes)
    params = RabcParams(config.bc.chunk, kappa=config.kappa)
    repeat: dict[str, Any] | None = None
    for task, root in roots.items():
        lap = time.perf_counter()
        demos = data.load_demos(task, root)
        kept = data.successful(demos)
        progress = data.episode_progress(checkpoint, root)
        rabc = compute(progress, params)
        np.savez_compressed(
            config.out / f"{task}_rabc.npz",
            progress=np.concatenate(progress),
            weights=np.concatenate(rabc.weights),
            lengths=[len(p) for p in progress],
        )
        check = LayoutCheck()
        expert_start = time.perf_counter()
        expert = _evaluate(task, expert_controller(task), layouts, "expert", check)
        expert_record = {
            "seed": -1,
            "successes": sum(expert),
            "episodes": len(layouts),
            "outcomes": [int(x) for x in expert],
        }
        expert_record["rollout_s"] = time.perf_counter() - expert_start
        training_sets = {"bc": (demos, None), "bc_success": (kept, None), "rabc": (demos, rabc.weights)}
        per_arm: dict[str, list[dict[str, Any]]] = {arm: [] for arm in POLICY_ARMS}
        for seed in config.seeds:
            for arm in POLICY_ARMS:
                arm_demos, weights = training_sets[arm]
                t0 = time.perf_counter()
                policy = _train(arm_demos, weights, config.bc, seed, arm)
                t1 = time.perf_counter()
                outcomes = _evaluate(task, state_controller(policy.act), layouts, f"{arm} seed {seed}", check)
                per_arm[arm].append(
                    {
                        "seed": seed,
                        "successes": sum(outcomes),
                        "episodes": len(layouts),
                        "outcomes": [int(x) for x in outcomes],
                        "train_s": t1 - t0,
                        "rollout_s": time.perf_counter() - t1,
                    }
                )
                if config.repeat_check and repeat is None and arm == "bc":
                    again = _train(arm_demos, weights, config.bc, seed, f"{arm} (repeat check)")
                    again_outcomes = _evaluate(
                        task, state_controller(again.act), layouts, f"{arm} seed {seed} (repeat check)", check
                    )
                    repeat = {
                        "task": task,
                        "arm": arm,
                        "seed": seed,
                        "parameters_identical": _same_parameters(policy, again),
                        "outcomes_identical": again_outcomes == outcomes,
                        "successes": [sum(outcomes), sum(again_outcomes)],
                    }
        arms = {"expert": arm_stats([expert_record]), **{arm: arm_stats(runs) for arm, runs in per_arm.items()}}
        tasks[task] = {
            "layout_seeds": [layouts[0], layouts[-1]],
            "layout_check": check.summary(),
            "success_filtered_demos": {q: kept.quality.count(q) for q in QUALITIES if q in kept.quality},
            "demos_by_quality": {q: demos.quality.count(q) for q in QUALITIES if q in demos.quality},
            "arms": arms,
            "paired": comparisons(arms, config.bootstrap),
            "weights": weight_report(demos, progress, rabc),
        }
        timing[f"weights, BC and rollouts {task}"] = time.perf_counter() - lap
        _write(config, env, sarm_report, tasks, timing, cached, repeat)  # partial report after each task
    timing["total"] = time.perf_counter() - started
    return _write(config, env, sarm_report, tasks, timing, cached, repeat)


def _write(
    config: ExperimentConfig,
    env: dict[str, Any],
    sarm: dict[str, Any],
    tasks: dict[str, Any],
    timing: dict[str, float],
    cached: dict[str, Any],
    repeat: dict[str, Any] | None,
) -> dict[str, Any]:
    results = {
        "config": config.to_dict(),
        "environment": {**env, "load_average_end": load_average()},
        "sarm": sarm,
        "tasks": tasks,
        "repeat_check": repeat,
        "wall_time_s": timing,
        "data_stage_times": cached,  # when each cached data stage ran and how long it took then
        "complete": "total" in timing,
    }
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.with_suffix(".json").write_text(json.dumps(results, indent=2))
    plot_path = config.results.with_suffix(".png")
    plot(results, plot_path)
    config.results.with_suffix(".md").write_text(markdown(results, plot_path.name))
    return results
