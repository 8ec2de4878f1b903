"""results.json → a markdown report and a PNG (success rates with Wilson 95% CIs; weights per demo quality)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sarm.sim.metaworld_demos import QUALITIES

ARMS = {"expert": ("scripted expert", "0.7"), "bc": ("BC", "tab:blue"), "rabc": ("BC + RA-BC", "tab:orange")}
QUALITY_COLOURS = {"clean": "tab:green", "degraded": "tab:olive", "failed": "tab:red"}


def _rate(arm: dict[str, Any]) -> str:
    low, high = arm["ci95"]
    return f"{arm['rate']:.2f} [{low:.2f}, {high:.2f}] ({arm['successes']}/{arm['episodes']})"


def _sarm_line(sarm: dict[str, Any]) -> str:
    val = sarm["validation"]
    if not val:
        return "SARM validation figures: none recorded."
    return (
        f"SARM on its held-out validation windows: stage accuracy {val['val_stage_accuracy']:.3f}, "
        f"progress MSE {val['val_progress_mse']:.4f}."
    )


def markdown(results: dict[str, Any], plot_name: str) -> str:
    config = results["config"]
    lines = [
        "# RA-BC vs vanilla BC on Meta-World",
        "",
        f"Demos per task: {config['demos']} ({config['mix']}), data seed {config['data_seed']}. SARM: "
        f"{results['sarm']['source']}. BC: MLP {config['bc']['layers']}×{config['bc']['hidden']} on the "
        f"{config['state_dim']}-d state, chunk {config['bc']['chunk']} (executes {config['bc']['execute']}), "
        f"{config['bc']['steps']} steps at batch {config['bc']['batch_size']}, seeds {config['seeds']}; RA-BC κ = "
        f"{config['kappa']}, Δ = chunk, global statistics. Rollouts: {config['episodes']} layouts per task and seed, "
        "the same for every arm. Success rate with Wilson 95% interval, pooled over seeds.",
        "",
        _sarm_line(results["sarm"]),
        "",
        "| task | scripted expert | BC | BC + RA-BC | RA-BC − BC (Newcombe 95%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for task, r in results["tasks"].items():
        rates = " | ".join(_rate(r["arms"][arm]) for arm in ARMS)
        diff, (low, high) = r["rabc_minus_bc"]["difference"], r["rabc_minus_bc"]["ci95"]
        lines.append(f"| {task} | {rates} | {diff:+.2f} [{low:+.2f}, {high:+.2f}] |")
    lines += ["", "Per seed (successes / episodes, BC → RA-BC):", ""]
    for task, r in results["tasks"].items():
        pairs = ", ".join(
            f"seed {b['seed']}: {b['successes']} → {a['successes']} / {b['episodes']}"
            for b, a in zip(r["arms"]["bc"]["per_seed"], r["arms"]["rabc"]["per_seed"], strict=True)
        )
        lines.append(f"- {task}: {pairs}")
    lines += [
        "",
        "## RA-BC weights per demo quality",
        "",
        "| task | quality | demos | frame share | mean weight | w = 0 share | w = 1 share | share of weight mass "
        "| mean progress gain | final progress |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, r in results["tasks"].items():
        for quality, q in r["weights"]["by_quality"].items():
            lines.append(
                f"| {task} | {quality} | {q['episodes']} | {q['frame_share']:.2f} | {q['mean_weight']:.3f} | "
                f"{q['zero_weight_share']:.2f} | {q['full_weight_share']:.2f} | {q['weight_mass_share']:.2f} | "
                f"{q['mean_progress_gain']:+.4f} | {q['final_progress_mean']:.2f} |"
            )
    lines += ["", "Most down-weighted demos:", ""]
    for task, r in results["tasks"].items():
        worst = "; ".join(
            f"#{d['episode']} {d['quality']} w̄={d['mean_weight']:.2f} ({d['perturbations']})"
            for d in r["weights"]["most_down_weighted"][:5]
        )
        lines.append(f"- {task} (mean weight {r['weights']['mean_weight']:.3f}): {worst}")
    timing = ", ".join(f"{k} {v / 60:.1f} min" for k, v in results["wall_time_s"].items())
    lines += ["", f"Wall time: {timing}.", "", f"![success rates and weights]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    tasks = list(results["tasks"])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 2.8 * len(tasks)), 8))
    width = 0.26
    x = np.arange(len(tasks))
    for k, (arm, (label, colour)) in enumerate(ARMS.items()):
        stats = [results["tasks"][t]["arms"][arm] for t in tasks]
        rates = np.array([s["rate"] for s in stats])
        errors = np.array([[s["rate"] - s["ci95"][0], s["ci95"][1] - s["rate"]] for s in stats]).T
        top.bar(x + (k - 1) * width, rates, width, yerr=errors, capsize=4, label=label, color=colour)
    top.set_xticks(x, tasks)
    top.set_ylim(0, 1.05)
    top.set_ylabel("success rate (Wilson 95% CI)")
    top.set_title("Closed-loop success, pooled over seeds")
    top.legend(loc="lower right", fontsize=8)
    rng = np.random.default_rng(0)  # jitter only
    for k, quality in enumerate(QUALITIES):
        for i, task in enumerate(tasks):
            q = results["tasks"][task]["weights"]["by_quality"].get(quality)
            if q is None:
                continue
            position = i + (k - 1) * width
            bottom.bar(
                position,
                q["mean_weight"],
                width,
                color=QUALITY_COLOURS[quality],
                alpha=0.6,
                label=quality if i == 0 else None,
            )
            dots = np.asarray(q["episode_mean_weights"])
            bottom.scatter(position + rng.uniform(-width / 3, width / 3, len(dots)), dots, s=6, color="k")
    bottom.set_xticks(x, tasks)
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("RA-BC weight (bar: frame mean; dots: per demo)")
    bottom.set_title("RA-BC weights by demo quality")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
