"""The RA-BC experiment's cheap logic: Wilson intervals, chunk targets, the weighted BC loss, rollouts, and
the whole `--quick` pipeline (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sarm.sim.metaworld_demos")

from bench.rabc_experiment.data import Demos
from bench.rabc_experiment.policy import BCConfig, chunk_targets, train_bc
from bench.rabc_experiment.rollout import eval_seeds, expert_controller, rollout, state_controller
from bench.rabc_experiment.segments import retreat_frames
from bench.rabc_experiment.stats import newcombe_difference, wilson_interval
from bench.rabc_experiment.weights import weight_report
from sarm.rabc.weights import RabcParams, compute
from sarm.sim.metaworld_demos import MAX_STEPS, STATE_NAMES


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [  # hand-computed: centre (p + z²/2n)/(1 + z²/n) ± z·sqrt(p(1−p)/n + z²/4n²)/(1 + z²/n), z = 1.96
        (5, 10, 0.2366, 0.7634),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (1, 50, 0.0035, 0.1050),
        (45, 50, 0.7864, 0.9565),
    ],
)
def test_wilson_interval_matches_hand_values(successes: int, trials: int, low: float, high: float) -> None:
    got = wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(3, 0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_newcombe_difference_matches_his_worked_example() -> None:
    # Newcombe (1998), Stat. Med. 17:873, method 10 on 56/70 vs 48/80: 0.2000 with interval (0.0524, 0.3339).
    assert newcombe_difference(48, 80, 56, 70) == pytest.approx((0.0524, 0.3339), abs=5e-5)
    low, high = newcombe_difference(25, 50, 25, 50)
    assert low == pytest.approx(-high) and low < 0 < high


def test_chunk_targets_clamp_at_each_episode_end() -> None:
    a = np.arange(3, dtype=np.float32)[:, None]
    b = 10 + np.arange(2, dtype=np.float32)[:, None]
    targets = chunk_targets([a, b], chunk=3)[..., 0]
    assert targets.tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [10, 11, 11], [11, 11, 11]]


def _demos(actions: list[float], length: int = 20, qualities: tuple[str, ...] = ("clean", "failed")) -> Demos:
    # Every episode visits the same states and disagrees only on the action.
    states = [np.linspace(0, 1, length * len(STATE_NAMES), dtype=np.float32).reshape(length, -1) for _ in actions]
    return Demos(
        task="pick-place-v3",
        episodes=list(range(len(actions))),
        quality=list(qualities),
        perturbations=[""] * len(actions),
        success=[q != "failed" for q in qualities],
        state=states,
        action=[np.full((length, 4), value, np.float32) for value in actions],
    )


def test_unit_weights_reproduce_vanilla_bc_exactly() -> None:
    demos = _demos([0.5, -0.5])
    config = BCConfig(chunk=2, execute=1, hidden=16, layers=1, steps=20, batch_size=8)
    vanilla = train_bc(demos, None, config, seed=3)
    ones = train_bc(demos, [np.ones(20), np.ones(20)], config, seed=3)
    for p, q in zip(vanilla.parameters(), ones.parameters(), strict=True):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())


def test_zero_weights_remove_a_demo_from_the_loss() -> None:
    demos = _demos([0.5, -0.5])
    config = BCConfig(chunk=2, execute=1, hidden=32, layers=2, steps=300, batch_size=16, lr=3e-3)
    weighted = train_bc(demos, [np.ones(20), np.zeros(20)], config, seed=0)
    vanilla = train_bc(demos, None, config, seed=0)
    state = demos.state[0][5]
    assert weighted.act(state) == pytest.approx(np.full((1, 4), 0.5), abs=0.05)
    assert vanilla.act(state) == pytest.approx(np.zeros((1, 4)), abs=0.1)  # the two demos average out


def test_weight_report_groups_by_quality() -> None:
    demos = _demos([0.5, -0.5])
    progress = [np.linspace(0, 1, 20), np.concatenate([np.linspace(0, 0.5, 10), np.linspace(0.5, 0.2, 10)])]
    report = weight_report(demos, progress, compute(progress, RabcParams(chunk_size=2)))
    clean, failed = report["by_quality"]["clean"], report["by_quality"]["failed"]
    assert clean["episodes"] == failed["episodes"] == 1
    assert clean["mean_weight"] > failed["mean_weight"]
    assert failed["zero_weight_share"] > 0.4  # the regressing half
    assert report["most_down_weighted"][0]["quality"] == "failed"


def test_rollouts_expert_succeeds_and_idle_policy_fails() -> None:
    layouts = eval_seeds(2)
    assert rollout("pick-place-v3", expert_controller("pick-place-v3"), layouts) == [True, True]
    idle = state_controller(lambda state: np.zeros((8, 4), np.float32))
    assert rollout("pick-place-v3", idle, layouts[:1]) == [False]


@pytest.mark.slow
def test_quick_experiment_end_to_end(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from bench.rabc_experiment.__main__ import main

    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, ["--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rabc_experiment.json").read_text())
    arms = report["tasks"]["pick-place-v3"]["arms"]
    assert set(arms) == {"expert", "bc", "rabc"}
    assert arms["bc"]["episodes"] == arms["rabc"]["episodes"] == 3
    assert (tmp_path / "rabc_experiment.png").stat().st_size > 0
    assert "RA-BC weights per demo quality" in (tmp_path / "rabc_experiment.md").read_text()


def test_retreat_frames_read_from_the_give_up_event() -> None:
    assert retreat_frames("noise=0.10;drop@stage2+5:12;give_up@stage2+17:41", length=120) == 41
    assert retreat_frames("noise=0.10;give_up@stage1+3:25", length=MAX_STEPS) == 0  # ran out of steps first
    assert retreat_frames("noise=0.05;pause@stage0+2:30", length=120) == 0
