"""Environment steps per second of a Meta-World vector env with SARM's dense reward (sarm_client.rl), against the
same env without it.

For 1, 4 and 16 sub-environments (gymnasium SyncVectorEnv, NEXT_STEP autoreset, pick-place-v3 driven by its
scripted expert, the default model's camera at 128 px; clients/examples/metaworld_rl.py), side by side in one run:
- bare: the env alone, nothing rendered;
- render: the env plus rendering every sub-env's frame each step (what any image reward needs);
- sarm: SarmVectorReward on the env: render, send every sub-env's frame in one round trip to a real gateway
  (`sarm serve`, local ONNX Runtime backend, default model, its own process) and wait for the scores;
- serial (N > 1): N SarmReward-wrapped single envs stepped one after the other, each waiting for its own score:
  what the vector form saves.
Reported: env steps/s (sub-env steps: vector steps x N) and the p50/p99 of one vector step, medians over
`--repeats` interleaved rounds. Usage:
    PYTHONPATH=.:service:clients .venv/bin/python bench/client_rl.py [--envs 1 4 16] [--steps 30] [--repeats 3]
Writes bench/results/client_rl.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import numpy as np
from _gateway import (
    ROOT,
    GatewayProcess,
    gateway_env,
    gateway_env_args,
    latency_ms,
    medians,
    print_table,
    write_results,
)

from sarm_client import Timeout
from sarm_client.rl import SarmReward, SarmVectorReward

TASK = "pick-place-v3"
MODES = ("bare", "render", "sarm", "serial")


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("metaworld_rl", ROOT / "clients" / "examples" / "metaworld_rl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_serial(n: int, steps: int, warmup: int, address: str, metaworld: ModuleType) -> dict[str, Any]:
    envs = [
        SarmReward(
            metaworld.make_env(TASK, max_steps=150), address, metaworld.INSTRUCTIONS[TASK], timeout=Timeout(step=60.0)
        )
        for _ in range(n)
    ]
    experts = [metaworld.expert(TASK) for _ in range(n)]
    try:
        obs = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
        samples = []
        for t in range(warmup + steps):
            started = time.perf_counter()
            for i, env in enumerate(envs):
                obs[i], _, terminated, truncated, _ = env.step(experts[i](obs[i]))
                if terminated or truncated:
                    obs[i], _ = env.reset()
            if t >= warmup:
                samples.append(time.perf_counter() - started)
    finally:
        for env in envs:
            env.close()
    return {
        "mode": "serial",
        "envs": n,
        "vector_steps": steps,
        "env_steps_per_s": n * steps / sum(samples),
        **latency_ms(samples),
    }


def run(mode: str, n: int, steps: int, warmup: int, address: str, metaworld: ModuleType) -> dict[str, Any]:
    if mode == "serial":
        return run_serial(n, steps, warmup, address, metaworld)
    vector = gym.vector.SyncVectorEnv([lambda: metaworld.make_env(TASK, max_steps=150)] * n)
    env: Any = vector
    if mode == "sarm":  # a generous step deadline: 16 frames on a shared 2-core machine take a while
        env = SarmVectorReward(vector, address, metaworld.INSTRUCTIONS[TASK], timeout=Timeout(step=60.0))
    experts: list[Callable[[np.ndarray], np.ndarray]] = [metaworld.expert(TASK) for _ in range(n)]
    try:
        obs, _ = env.reset(seed=0)
        samples = []
        for t in range(warmup + steps):
            started = time.perf_counter()
            actions = np.stack([act(o) for act, o in zip(experts, obs, strict=True)])
            obs, *_ = env.step(actions)
            if mode == "render":
                vector.render()
            if t >= warmup:
                samples.append(time.perf_counter() - started)
    finally:
        env.close()
    return {
        "mode": mode,
        "envs": n,
        "vector_steps": steps,
        "env_steps_per_s": n * steps / sum(samples),
        **latency_ms(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=30, help="timed vector steps per configuration")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every configuration; medians reported")
    parser.add_argument("--target", help="use this running gateway (HOST:PORT) instead of starting one")
    gateway_env_args(parser)
    args = parser.parse_args()
    metaworld = example()
    rounds: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        address = args.target or stack.enter_context(GatewayProcess(args.model_repo, gateway_env(args))).address
        for repeat in range(args.repeats):  # interleaved, so that a change of load on the machine hits every mode
            for n in args.envs:
                for mode in MODES:  # side by side, per size
                    if mode == "serial" and n == 1:
                        continue  # the same as sarm with one env
                    rounds.append({"repeat": repeat, **run(mode, n, args.steps, args.warmup, address, metaworld)})
                    print(f"round {repeat}: {n} env(s), {mode}: {rounds[-1]['env_steps_per_s']:.1f} env steps/s")
    keys = ("env_steps_per_s", "p50_ms", "p99_ms")
    results = [
        {"mode": m, "envs": n, **medians([r for r in rounds if (r["envs"], r["mode"]) == (n, m)], keys)}
        for n in args.envs
        for m in MODES
        if not (m == "serial" and n == 1)
    ]
    by = {(r["envs"], r["mode"]): r for r in results}
    write_results("client_rl", args, {"task": TASK, "results": results, "rounds": rounds})
    print_table(
        "Meta-World env steps/s, and one vector step's p50/p99 ms",
        ["envs", *MODES, *(f"{m} ms" for m in MODES)],
        table_rows(by, args.envs),
    )


def table_rows(by: dict[tuple[int, str], dict[str, Any]], sizes: list[int]) -> list[list[str]]:
    rows = []
    for n in sizes:
        cells = [by.get((n, m)) for m in MODES]
        rows.append(
            [
                str(n),
                *("-" if c is None else f"{c['env_steps_per_s']:.1f}" for c in cells),
                *("-" if c is None or "p50_ms" not in c else f"{c['p50_ms']:.0f}/{c['p99_ms']:.0f}" for c in cells),
            ]
        )
    return rows


if __name__ == "__main__":
    main()
