"""results.json → a markdown report and a PNG. Every number and every comparative sentence is computed from the
results; nothing in the report is written by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from bench.rabc_experiment.stats import interval_verdict
from sarm.sim.metaworld_demos import QUALITIES

ARMS = {
    "expert": ("scripted expert", "0.7"),
    "bc": ("BC", "tab:blue"),
    "bc_success": ("BC (success-filtered)", "tab:purple"),
    "rabc": ("BC + RA-BC", "tab:orange"),
}
SHORT = {"bc": "BC", "bc_success": "BC (success-filtered)", "rabc": "RA-BC"}
QUALITY_COLOURS = {"clean": "tab:green", "degraded": "tab:olive", "failed": "tab:red"}
# (b, a): the experiment reports b − a, paired on layouts, under comparison_key(b, a)
COMPARISONS = (("rabc", "bc"), ("rabc", "bc_success"), ("bc_success", "bc"))
COMPARISON_COLOURS = ("tab:orange", "tab:red", "tab:purple")
TARGET_TASKS = 2  # issue #14: RA-BC − BC paired interval above 0 on at least 2 of the 3 tasks


def _rate(arm: dict[str, Any]) -> str:
    low, high = arm["ci95"]
    return f"{arm['rate']:.2f} [{low:.2f}, {high:.2f}] ({arm['successes']}/{arm['episodes']})"


def _p(p: float) -> str:
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _sarm_line(sarm: dict[str, Any]) -> str:
    val = sarm["validation"]
    if not val:
        return "SARM validation figures: none recorded."
    return (
        f"SARM on its held-out validation windows: stage accuracy {val['val_stage_accuracy']:.3f}, "
        f"progress MSE {val['val_progress_mse']:.4f}."
    )


def comparison_key(b: str, a: str) -> str:
    return f"{b}-{a}"


def _comparison_name(c: dict[str, Any]) -> str:
    return f"{SHORT[c['b']]} − {SHORT[c['a']]}"


def _verdicts(results: dict[str, Any], key: str) -> dict[str, list[str]]:
    """Tasks grouped by where the paired interval of comparison `key` lies: 'above 0', 'includes 0', 'below 0'."""
    groups: dict[str, list[str]] = {"above 0": [], "includes 0": [], "below 0": []}
    for task, r in results["tasks"].items():
        if key in r["paired"]:
            groups[interval_verdict(*r["paired"][key]["ci95"])].append(task)
    return groups


def _list(tasks: list[str]) -> str:
    return ", ".join(tasks) if tasks else "none"


def _summary(results: dict[str, Any]) -> list[str]:
    n = len(results["tasks"])
    lines = []
    main = _verdicts(results, comparison_key(*COMPARISONS[0]))
    lines.append(
        f"- RA-BC − BC: the paired 95% interval lies above 0 on {len(main['above 0'])} of {n} tasks "
        f"({_list(main['above 0'])}), includes 0 on {len(main['includes 0'])} ({_list(main['includes 0'])}) and lies "
        f"below 0 on {len(main['below 0'])} ({_list(main['below 0'])})."
    )
    met = "met" if len(main["above 0"]) >= TARGET_TASKS else "not met"
    if not results.get("complete", True):
        met += " so far (partial run)"
    lines.append(f"- Issue #14's target (RA-BC − BC interval above 0 on at least {TARGET_TASKS} tasks): {met}.")
    for key in (comparison_key(b, a) for b, a in COMPARISONS[1:]):
        groups = _verdicts(results, key)
        if not any(groups.values()):
            continue
        name = _comparison_name(next(r["paired"][key] for r in results["tasks"].values() if key in r["paired"]))
        lines.append(
            f"- {name}: interval above 0 on {len(groups['above 0'])} ({_list(groups['above 0'])}), includes 0 on "
            f"{len(groups['includes 0'])} ({_list(groups['includes 0'])}), below 0 on {len(groups['below 0'])} "
            f"({_list(groups['below 0'])})."
        )
    return lines


def _seed_sign_line(task: str, r: dict[str, Any], b: str, a: str) -> str:
    """Per-seed differences of b − a in points, and how many seeds favour each arm."""
    diffs = [
        (sb["successes"] - sa["successes"]) / sa["episodes"] * 100
        for sb, sa in zip(r["arms"][b]["per_seed"], r["arms"][a]["per_seed"], strict=True)
    ]
    higher, lower = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    shown = ", ".join(f"{d:+.0f}" for d in diffs)
    return (
        f"- {task}, {SHORT[b]} − {SHORT[a]} per seed (points): {shown}; {SHORT[b]} higher in {higher} of "
        f"{len(diffs)} seeds, lower in {lower}."
    )


def _environment(results: dict[str, Any]) -> list[str]:
    env = results.get("environment", {})
    packages = ", ".join(f"{k} {v}" for k, v in env.get("packages", {}).items() if v)
    command = f"`{env['command']}`" if env.get("command") else "called in-process (settings: the config above)"
    timing = ", ".join(f"{k} {_minutes(v)}" for k, v in results["wall_time_s"].items())
    lines = [
        f"- Machine: {env.get('platform')}, {env.get('cpu_model')}, {env.get('cpus_usable')} usable of "
        f"{env.get('cpu_count')} CPUs; load average (1, 5, 15 min) {env.get('load_average_start')} at the start, "
        f"{env.get('load_average_end')} at the end.",
        f"- Python {env.get('python')}; {packages}; torch threads {env.get('torch_threads')}.",
        f"- Command: {command}.",
        f"- Wall time of this invocation: {timing}.",
    ]
    stages = results.get("data_stage_times", {})
    if stages:
        shown = ", ".join(f"{k} {_minutes(v['seconds'])} (finished {v['finished']})" for k, v in stages.items())
        lines.append(f"- Data stages, timed when they ran (cached in the work directory, reused afterwards): {shown}.")
    train = {arm: 0.0 for arm in ARMS}
    roll = {arm: 0.0 for arm in ARMS}
    for r in results["tasks"].values():
        for arm, a in r["arms"].items():
            train[arm] += sum(s.get("train_s", 0.0) for s in a["per_seed"])
            roll[arm] += sum(s.get("rollout_s", 0.0) for s in a["per_seed"])
    lines.append(
        "- Summed over tasks and seeds: "
        + "; ".join(
            (f"{ARMS[arm][0]} training {_minutes(train[arm])}, " if train[arm] else f"{ARMS[arm][0]} ")
            + f"rollouts {_minutes(roll[arm])}"
            for arm in ARMS
            if train[arm] or roll[arm]
        )
        + "."
    )
    return lines


def _checks(results: dict[str, Any]) -> list[str]:
    lines = []
    for task, r in results["tasks"].items():
        check, (first, last) = r["layout_check"], r["layout_seeds"]
        lines.append(
            f"- {task}: {check['layouts']} layouts (env seeds {first}–{last}); all {check['runs_compared']} rollout "
            "runs (every arm and seed) started from identical layouts (SHA-256 of each first observation compared)."
        )
    repeat = results.get("repeat_check")
    if repeat is None:
        lines.append("- No repeatability check was run; this report makes no claim about determinism.")
    else:
        yes = {True: "identical", False: "different"}
        a, b = repeat["successes"]
        lines.append(
            f"- Repeatability, checked once: {SHORT[repeat['arm']]} on {repeat['task']}, seed {repeat['seed']}, "
            "trained and rolled out a second time in the same process: parameters "
            f"{yes[repeat['parameters_identical']]}, "
            f"per-layout outcomes {yes[repeat['outcomes_identical']]} ({a} and {b} successes). Nothing was checked "
            "across processes, machines or library versions."
        )
    return lines


def markdown(results: dict[str, Any], plot_name: str) -> str:
    config, bc = results["config"], results["config"]["bc"]
    tasks = results["tasks"]
    lines = ["# RA-BC vs vanilla BC vs success-filtered BC on Meta-World", ""]
    if not results.get("complete", True):
        lines += [f"**Partial report**: {len(tasks)} of {len(config['tasks'])} tasks done so far.", ""]
    lines += [
        f"Demos per task: {config['demos']} ({config['mix']}), data seed {config['data_seed']}. SARM: "
        f"{results['sarm']['source']}. Three policy arms, each an MLP {bc['layers']}×{bc['hidden']} on the "
        f"{config['state_dim']}-d state, chunk {bc['chunk']} (executes {bc['execute']}), {bc['steps']} steps at "
        f"batch {bc['batch_size']}, seeds {config['seeds']}: BC on all demos; BC (success-filtered) on the demos "
        "whose dataset success flag is true; BC + RA-BC on all demos with RA-BC weights "
        f"(κ = {config['kappa']}, Δ = chunk, global statistics). Rollouts: {config['episodes']} "
        "layouts per task, the same for every arm and seed.",
        "",
        _sarm_line(results["sarm"]),
        "",
        "## Success rates",
        "",
        "Pooled over seeds, with a Wilson 95% interval (which treats every rollout as independent; the paired "
        "statistics below do not).",
        "",
        "| task | " + " | ".join(label for label, _ in ARMS.values()) + " |",
        "| --- " * (len(ARMS) + 1) + "|",
    ]
    for task, r in tasks.items():
        lines.append(f"| {task} | " + " | ".join(_rate(r["arms"][arm]) for arm in ARMS if arm in r["arms"]) + " |")
    first = next(iter(tasks.values()), None)
    resamples = next(iter(first["paired"].values()))["resamples"] if first and first["paired"] else 0
    lines += [
        "",
        "## Paired comparisons",
        "",
        "Difference of success rates b − a on the same layouts. Interval: 95% percentile interval of "
        f"{resamples} bootstrap resamples of layouts, each drawn layout keeping all its seeds. McNemar: exact "
        "two-sided binomial test on the discordant (seed, layout) pairs, which counts the seeds of one layout as "
        "independent pairs.",
        "",
        "| task | b − a | difference | 95% interval | interval vs 0 | only a / only b succeeded | McNemar p |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, r in tasks.items():
        for c in r["paired"].values():
            low, high = c["ci95"]
            lines.append(
                f"| {task} | {_comparison_name(c)} | {c['difference']:+.3f} | [{low:+.3f}, {high:+.3f}] | "
                f"{interval_verdict(low, high)} | {c['a_only']} / {c['b_only']} of {c['pairs']} | "
                f"{_p(c['p_mcnemar'])} |"
            )
    lines += ["", "## Summary", "", *_summary(results), "", "Per seed:", ""]
    for task, r in tasks.items():
        seeds = [s["seed"] for s in r["arms"]["bc"]["per_seed"]]
        counts = "; ".join(
            f"seed {seed}: "
            + ", ".join(
                f"{SHORT[arm]} {r['arms'][arm]['per_seed'][i]['successes']}" for arm in ("bc", "bc_success", "rabc")
            )
            + f" / {r['arms']['bc']['per_seed'][i]['episodes']}"
            for i, seed in enumerate(seeds)
        )
        lines.append(f"- {task}: {counts}")
    for task, r in tasks.items():
        lines.append(_seed_sign_line(task, r, "rabc", "bc"))
        lines.append(_seed_sign_line(task, r, "rabc", "bc_success"))
    lines += ["", "## The success-filtered arm's demos", ""]
    for task, r in tasks.items():
        kept, all_ = r["success_filtered_demos"], r["demos_by_quality"]
        shown = ", ".join(f"{q} {kept.get(q, 0)} of {n}" for q, n in all_.items())
        lines.append(f"- {task}: {sum(kept.values())} of {sum(all_.values())} demos ({shown}).")
    lines += [
        "",
        "## RA-BC weights per demo quality",
        "",
        "| task | quality | demos | frame share | mean weight | w = 0 share | w = 1 share | share of weight mass "
        "| mean progress gain | final progress |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for task, r in tasks.items():
        for quality, q in r["weights"]["by_quality"].items():
            lines.append(
                f"| {task} | {quality} | {q['episodes']} | {q['frame_share']:.2f} | {q['mean_weight']:.3f} | "
                f"{q['zero_weight_share']:.2f} | {q['full_weight_share']:.2f} | {q['weight_mass_share']:.2f} | "
                f"{q['mean_progress_gain']:+.4f} | {q['final_progress_mean']:.2f} |"
            )
    lines += ["", "Most down-weighted demos:", ""]
    for task, r in tasks.items():
        worst = "; ".join(
            f"#{d['episode']} {d['quality']} w̄={d['mean_weight']:.2f} ({d['perturbations']})"
            for d in r["weights"]["most_down_weighted"][:5]
        )
        lines.append(f"- {task} (mean weight {r['weights']['mean_weight']:.3f}): {worst}")
    lines += ["", "## Checks", "", *_checks(results), "", "## Environment and wall time", "", *_environment(results)]
    lines += ["", f"![success rates and weights]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    tasks = list(results["tasks"])
    fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(max(7, 3.2 * len(tasks)), 11))
    x = np.arange(len(tasks))
    width = 0.8 / len(ARMS)
    for k, (arm, (label, colour)) in enumerate(ARMS.items()):
        stats = [results["tasks"][t]["arms"][arm] for t in tasks]
        rates = np.array([s["rate"] for s in stats])
        errors = np.array([[s["rate"] - s["ci95"][0], s["ci95"][1] - s["rate"]] for s in stats]).T.reshape(2, -1)
        offset = (k - (len(ARMS) - 1) / 2) * width
        top.bar(x + offset, rates, width, yerr=errors, capsize=3, label=label, color=colour)
    top.set_xticks(x, tasks)
    top.set_ylim(0, 1.05)
    top.set_ylabel("success rate (Wilson 95% CI)")
    top.set_title("Closed-loop success, pooled over seeds")
    top.legend(loc="lower right", fontsize=8)
    keys = [comparison_key(b, a) for b, a in COMPARISONS]
    dwidth = 0.8 / len(keys)
    for k, (key, colour) in enumerate(zip(keys, COMPARISON_COLOURS, strict=True)):
        present = [t for t in tasks if key in results["tasks"][t]["paired"]]
        if not present:
            continue
        cs = [results["tasks"][t]["paired"][key] for t in present]
        positions = np.array([tasks.index(t) for t in present]) + (k - (len(keys) - 1) / 2) * dwidth
        diffs = np.array([c["difference"] for c in cs])
        errors = np.array([[c["difference"] - c["ci95"][0], c["ci95"][1] - c["difference"]] for c in cs]).T
        middle.errorbar(positions, diffs, yerr=errors, fmt="o", capsize=4, color=colour, label=_comparison_name(cs[0]))
    middle.axhline(0, color="k", linewidth=0.8)
    middle.set_xticks(x, tasks)
    middle.set_ylabel("paired difference (bootstrap 95% CI)")
    middle.set_title("Paired differences on the same layouts")
    middle.legend(loc="best", fontsize=8)
    rng = np.random.default_rng(0)  # jitter only
    qwidth = 0.8 / len(QUALITIES)
    for k, quality in enumerate(QUALITIES):
        for i, task in enumerate(tasks):
            q = results["tasks"][task]["weights"]["by_quality"].get(quality)
            if q is None:
                continue
            position = i + (k - (len(QUALITIES) - 1) / 2) * qwidth
            bottom.bar(
                position,
                q["mean_weight"],
                qwidth,
                color=QUALITY_COLOURS[quality],
                alpha=0.6,
                label=quality if i == 0 else None,
            )
            dots = np.asarray(q["episode_mean_weights"])
            bottom.scatter(position + rng.uniform(-qwidth / 3, qwidth / 3, len(dots)), dots, s=6, color="k")
    bottom.set_xticks(x, tasks)
    bottom.set_ylim(0, 1.05)
    bottom.set_ylabel("RA-BC weight (bar: frame mean; dots: per demo)")
    bottom.set_title("RA-BC weights by demo quality")
    bottom.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def regenerate(prefix: Path) -> None:
    """Rewrite PREFIX.md and PREFIX.png from PREFIX.json (e.g. after a change to this module)."""
    results = json.loads(prefix.with_suffix(".json").read_text())
    plot(results, prefix.with_suffix(".png"))
    prefix.with_suffix(".md").write_text(markdown(results, prefix.with_suffix(".png").name))


if __name__ == "__main__":
    regenerate(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/rabc_experiment"))
