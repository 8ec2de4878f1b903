"""Closed-loop rollouts in Meta-World without rendering: success is the env's own flag at any step."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from metaworld.policies import ENV_POLICY_MAP
from metaworld.policies.policy import Policy
from metaworld.sawyer_xyz_env import SawyerXYZEnv

from sarm.sim.metaworld_demos import MAX_STEPS, make_env, policy_state, reset_env

# Maps an observation (39,) to the actions (k, 4) to execute before asking again.
Controller = Callable[[np.ndarray], np.ndarray]

EVAL_SEED_BASE = 10_000_000  # layouts away from the demos' per-episode seeds (32-bit hashes of (seed, i, attempt))


def eval_seeds(episodes: int) -> list[int]:
    """The layouts every arm is rolled out on: the same ones, so the comparison is paired."""
    return [EVAL_SEED_BASE + i for i in range(episodes)]


def state_controller(act: Callable[[np.ndarray], np.ndarray]) -> Controller:
    """A controller from a state policy (STATE_NAMES vector → actions)."""
    return lambda obs: act(policy_state(obs))


def expert_controller(task: str) -> Controller:
    """Meta-World's scripted expert, one action at a time: the ceiling the demos were made from."""
    make_expert: Callable[[], Policy] = ENV_POLICY_MAP[task]  # concrete subclasses of the abstract Policy
    expert = make_expert()
    return lambda obs: np.clip(expert.get_action(obs), -1.0, 1.0)[None]


def layout_digest(obs: np.ndarray) -> str:
    """A short fingerprint of a layout's first observation (object and goal positions included): equal digests
    across arms show the arms really were rolled out on the same layouts."""
    return hashlib.sha256(np.asarray(obs, dtype=np.float64).tobytes()).hexdigest()[:16]


def rollout(
    task: str,
    controller: Controller,
    seeds: Sequence[int],
    on_episode: Callable[[bool], None] | None = None,
    digests: list[str] | None = None,
) -> list[bool]:
    """One episode per layout seed, up to MAX_STEPS steps; returns whether each succeeded. If `digests` is given,
    each episode's layout_digest is appended to it."""
    env = make_env(task)
    results = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the experts warn on every saturated action
            for seed in seeds:
                results.append(_episode(env, controller, seed, digests))
                if on_episode is not None:
                    on_episode(results[-1])
    finally:
        env.close()
    return results


def _episode(env: SawyerXYZEnv, controller: Controller, seed: int, digests: list[str] | None) -> bool:
    obs = reset_env(env, seed)
    if digests is not None:
        digests.append(layout_digest(obs))
    steps = 0
    while steps < MAX_STEPS:
        for action in controller(obs):
            obs, _, _, _, info = env.step(action.astype(np.float32))
            steps += 1
            if info["success"]:
                return True
            if steps >= MAX_STEPS:
                break
    return False
