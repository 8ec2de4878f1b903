"""The RA-BC experiment's cheap logic: Wilson intervals, paired statistics, chunk targets, the weighted BC loss,
the success filter, rollouts and their layout check, the generated report, and the whole `--quick` pipeline
(slow)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sarm.sim.metaworld_demos")

from bench.rabc_experiment.data import Demos, successful
from bench.rabc_experiment.experiment import LayoutCheck
from bench.rabc_experiment.policy import BCConfig, chunk_targets, train_bc
from bench.rabc_experiment.report import _summary
from bench.rabc_experiment.rollout import eval_seeds, expert_controller, rollout, state_controller
from bench.rabc_experiment.segments import retreat_frames
from bench.rabc_experiment.stats import (
    interval_verdict,
    mcnemar_exact,
    paired_comparison,
    wilson_interval,
)
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


@pytest.mark.parametrize(
    ("a_only", "b_only", "p"),
    [  # hand-computed: p = 2·Σ_{i ≤ min} C(n, i) / 2^n, capped at 1
        (10, 2, 2 * (1 + 12 + 66) / 4096),  # 0.03857
        (2, 10, 2 * (1 + 12 + 66) / 4096),
        (0, 6, 2 / 64),
        (1, 9, 2 * (1 + 10) / 1024),
        (5, 5, 1.0),  # 2 · 638/1024 > 1
        (0, 0, 1.0),  # no discordant pair: no evidence either way
    ],
)
def test_mcnemar_exact_matches_hand_values(a_only: int, b_only: int, p: float) -> None:
    assert mcnemar_exact(a_only, b_only) == pytest.approx(p, rel=1e-12)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_paired_comparison_counts_discordant_pairs_and_difference() -> None:
    a = np.array([[1, 1, 0, 0, 1], [0, 1, 0, 1, 1]], bool)
    b = np.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
    c = paired_comparison(a, b, resamples=2000)
    # only a: (0,1), (1,4); only b: (0,2), (0,3), (1,0), (1,2); b − a = (8 − 6) / 10.
    assert (c.a_only, c.b_only, c.pairs) == (2, 4, 10)
    assert c.difference == pytest.approx(0.2)
    assert c.p_mcnemar == pytest.approx(2 * (1 + 6 + 15) / 64)
    assert c.ci95[0] <= c.difference <= c.ci95[1]


def test_paired_bootstrap_interval_matches_the_normal_approximation() -> None:
    # 100 layouts, one seed: b − a is 1 on half of them and 0 on the rest. The mean difference is 0.5 with
    # standard error sqrt(0.25 / 100) = 0.05, so the 95% interval is about 0.5 ± 1.96 · 0.05 = [0.402, 0.598].
    a = np.zeros((1, 100), bool)
    b = np.arange(100)[None] % 2 == 0
    c = paired_comparison(a, b, resamples=20_000, seed=1)
    assert c.difference == pytest.approx(0.5)
    assert c.ci95 == pytest.approx((0.402, 0.598), abs=0.015)


def test_paired_bootstrap_keeps_the_seeds_of_a_layout_together() -> None:
    # On every layout seed 0 favours b and seed 1 favours a: each layout's difference is 0, so resampling
    # layouts (not single rollouts) gives a degenerate interval at 0, while McNemar sees 50 discordant pairs a side.
    a = np.array([[0] * 50, [1] * 50], bool)
    b = np.array([[1] * 50, [0] * 50], bool)
    c = paired_comparison(a, b, resamples=500)
    assert c.difference == 0 and c.ci95 == (0.0, 0.0)
    assert (c.a_only, c.b_only) == (50, 50) and c.p_mcnemar == pytest.approx(1.0)
    constant = paired_comparison(np.zeros((3, 7), bool), np.ones((3, 7), bool), resamples=100)
    assert constant.difference == 1.0 and constant.ci95 == (1.0, 1.0)


def test_paired_comparison_rejects_unpaired_shapes() -> None:
    with pytest.raises(ValueError, match="equal"):
        paired_comparison(np.zeros((2, 5), bool), np.zeros((2, 6), bool))
    with pytest.raises(ValueError, match="equal"):
        paired_comparison(np.zeros(5, bool), np.zeros(5, bool))


def test_interval_verdict() -> None:
    assert interval_verdict(0.01, 0.2) == "above 0"
    assert interval_verdict(0.0, 0.2) == "includes 0"
    assert interval_verdict(-0.3, -0.1) == "below 0"


def _paired(low: float, high: float, b: str = "rabc", a: str = "bc") -> dict[str, object]:
    return {"b": b, "a": a, "ci95": [low, high]}


def test_summary_sentences_are_computed_from_the_intervals() -> None:
    results = {
        "tasks": {
            "t1": {"paired": {"rabc-bc": _paired(0.05, 0.2), "rabc-bc_success": _paired(-0.2, -0.05, a="bc_success")}},
            "t2": {"paired": {"rabc-bc": _paired(-0.01, 0.2), "rabc-bc_success": _paired(-0.1, 0.1, a="bc_success")}},
            "t3": {"paired": {"rabc-bc": _paired(0.01, 0.3), "rabc-bc_success": _paired(-0.1, 0.1, a="bc_success")}},
        }
    }
    lines = _summary(results)
    assert lines[0] == (
        "- RA-BC − BC: the paired 95% interval lies above 0 on 2 of 3 tasks (t1, t3), includes 0 on 1 (t2) and "
        "lies below 0 on 0 (none)."
    )
    assert lines[1].endswith(": met.")
    assert lines[2] == (
        "- RA-BC − BC (success-filtered): interval above 0 on 0 (none), includes 0 on 2 (t2, t3), below 0 on 1 (t1)."
    )
    results["tasks"]["t3"]["paired"]["rabc-bc"] = _paired(-0.01, 0.3)
    assert _summary(results)[1].endswith(": not met.")


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
    expert_digests: list[str] = []
    assert rollout("pick-place-v3", expert_controller("pick-place-v3"), layouts, digests=expert_digests) == [True, True]
    idle = state_controller(lambda state: np.zeros((8, 4), np.float32))
    idle_digests: list[str] = []
    assert rollout("pick-place-v3", idle, layouts[:1], digests=idle_digests) == [False]
    # The same layout seed gives the same layout whatever the controller; different seeds give different layouts.
    assert idle_digests == expert_digests[:1] and expert_digests[0] != expert_digests[1]


def test_layout_check_stops_on_a_different_layout() -> None:
    check = LayoutCheck()
    check.check(["a", "b"], "expert")
    check.check(["a", "b"], "bc seed 0")
    assert check.summary() == {"layouts": 2, "runs_compared": 2, "identical": True}
    with pytest.raises(RuntimeError, match="layout 1 differs"):
        check.check(["a", "c"], "rabc seed 0")


def test_success_filter_keeps_only_flagged_demos() -> None:
    demos = _demos([0.5, -0.5, 0.1], qualities=("clean", "failed", "degraded"))
    kept = successful(demos)
    assert kept.episodes == [0, 2] and kept.quality == ["clean", "degraded"] and all(kept.success)
    assert [float(a[0, 0]) for a in kept.action] == [0.5, pytest.approx(0.1)]
    with pytest.raises(ValueError, match="no demo"):
        successful(dataclasses.replace(demos, success=[False] * 3))


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
    assert set(arms) == {"expert", "bc", "bc_success", "rabc"}
    assert arms["bc"]["episodes"] == arms["bc_success"]["episodes"] == arms["rabc"]["episodes"] == 3
    assert all(len(s["outcomes"]) == 3 for arm in arms.values() for s in arm["per_seed"])
    task = report["tasks"]["pick-place-v3"]
    assert set(task["paired"]) == {"rabc-bc", "rabc-bc_success", "bc_success-bc"}
    assert task["layout_check"] == {"layouts": 3, "runs_compared": 5, "identical": True}  # expert, 3 arms, repeat
    assert report["repeat_check"]["parameters_identical"] and report["repeat_check"]["outcomes_identical"]
    assert report["environment"]["packages"]["torch"].startswith("2.13.0")
    assert (tmp_path / "rabc_experiment.png").stat().st_size > 0
    text = (tmp_path / "rabc_experiment.md").read_text()
    for section in ("Paired comparisons", "RA-BC weights per demo quality", "Environment and wall time"):
        assert section in text


def test_retreat_frames_read_from_the_give_up_event() -> None:
    assert retreat_frames("noise=0.10;drop@stage2+5:12;give_up@stage2+17:41", length=120) == 41
    assert retreat_frames("noise=0.10;give_up@stage1+3:25", length=MAX_STEPS) == 0  # ran out of steps first
    assert retreat_frames("noise=0.05;pause@stage0+2:30", length=120) == 0
